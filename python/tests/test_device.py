"""The ``device`` argument: ``"cpu"`` is the default's bits; a CUDA device raises
CudaUnavailableError where the wheel has no ``cuda`` feature (the default wheel), and where it has
one and a GPU answers, agrees with the CPU to rounding (skipped, with the reason, on a CUDA build
without a usable GPU); a bad name is a ValueError; the estimators carry ``device`` as a parameter.
"""

import os
import tempfile
import warnings

import numpy as np
import pytest
from sklearn.base import clone

import varsparse
from varsparse import CudaUnavailableError, VarSparseCoder, VarSparseDictionaryLearning
from conftest import LAM, ROOT
from test_functions import _mlp, _same_bits

FIXTURES = ROOT / "tests" / "fixtures"


@pytest.fixture(scope="module")
def data(mnist, unit_dictionary):
    """Small inputs for every entry point."""
    return {
        "Y": mnist["test_images"][:120],
        "W": unit_dictionary,
        "X": mnist["train_images"][:400],
        "model": varsparse.load(FIXTURES / "checkpoint-v1"),
        "model_Y": np.load(FIXTURES / "checkpoint-v1-input.npy"),
    }


def _learner(**kw):
    return VarSparseDictionaryLearning(n_components=8, max_epochs=1, batch_size=50,
                                       random_state=0, validation_fraction=0.1, **kw)


# Every entry point that computes, as f(data, device) -> the arrays it returns. FISTA runs a
# fixed number of iterations (tol 0) so that the CPU and a GPU do the same work.
ENTRY_POINTS = {
    "fista": lambda d, dev: [varsparse.fista(d["Y"], d["W"], LAM, tol=0.0, max_iter=60,
                                             device=dev)[0]],
    "fista hinge, direct": lambda d, dev: [varsparse.fista(
        d["Y"], d["W"], LAM, beta=10.0, direct=True, tol=0.0, max_iter=60, device=dev)[0]],
    "fista_mlp": lambda d, dev: [varsparse.fista_mlp(d["Y"], *_mlp(), 0.01, step=0.5, tol=0.0,
                                                     max_iter=40, device=dev)[0]],
    "lasso": lambda d, dev: [varsparse.lasso(d["Y"], d["W"], LAM, device=dev)[0]],
    "Model.encode": lambda d, dev: [d["model"].encode(d["model_Y"], device=dev)],
    "Model.encode_fista": lambda d, dev: [d["model"].encode_fista(d["model_Y"], device=dev)[0]],
    "Model.decode": lambda d, dev: [d["model"].decode(
        np.abs(np.random.default_rng(1).standard_normal((30, 4))).astype(np.float32),
        device=dev)],
    "VarSparseDictionaryLearning": lambda d, dev: _fit_outputs(_learner(device=dev), d),
    "VarSparseCoder fista": lambda d, dev: [VarSparseCoder(
        d["W"].T, lam=LAM, method="fista", tol=0.0, max_iter=60, device=dev).fit_transform(
            d["Y"])],
    "VarSparseCoder auto (exact)": lambda d, dev: [VarSparseCoder(
        d["W"].T, lam=LAM, device=dev).fit_transform(d["Y"])],
}

# The entry points whose CUDA device starts the GPU but computes on the CPU (the exact solver)
EXACT = {"lasso", "VarSparseCoder auto (exact)"}


def _fit_outputs(est, d):
    est.fit(d["X"])
    Z = est.transform(d["Y"])
    return [est.components_, Z, est.transform(d["Y"], method="fista"),
            est.inverse_transform(Z)]


def _temp_checkpoints():
    """The temporary checkpoints (of the GPU road) this process has left behind."""
    prefix = f"varsparse-py-{os.getpid()}-"
    return [n for n in os.listdir(tempfile.gettempdir()) if n.startswith(prefix)]


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_cpu_device_is_the_default(data, entry):
    """``device="cpu"`` gives the default's bits, without a warning."""
    call = ENTRY_POINTS[entry]
    if entry == "VarSparseDictionaryLearning":
        default = _fit_outputs(_learner(), data)
    else:
        default = _default(entry, data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        on_cpu = call(data, "cpu")
    assert len(on_cpu) == len(default)
    for a, b in zip(on_cpu, default):
        _same_bits(a, b)


def _default(entry, d):
    """The entry point's call without ``device``."""
    rows = np.abs(np.random.default_rng(1).standard_normal((30, 4))).astype(np.float32)
    return {
        "fista": lambda: [varsparse.fista(d["Y"], d["W"], LAM, tol=0.0, max_iter=60)[0]],
        "fista hinge, direct": lambda: [varsparse.fista(
            d["Y"], d["W"], LAM, beta=10.0, direct=True, tol=0.0, max_iter=60)[0]],
        "fista_mlp": lambda: [varsparse.fista_mlp(d["Y"], *_mlp(), 0.01, step=0.5, tol=0.0,
                                                  max_iter=40)[0]],
        "lasso": lambda: [varsparse.lasso(d["Y"], d["W"], LAM)[0]],
        "Model.encode": lambda: [d["model"].encode(d["model_Y"])],
        "Model.encode_fista": lambda: [d["model"].encode_fista(d["model_Y"])[0]],
        "Model.decode": lambda: [d["model"].decode(rows)],
        "VarSparseCoder fista": lambda: [VarSparseCoder(
            d["W"].T, lam=LAM, method="fista", tol=0.0, max_iter=60).fit_transform(d["Y"])],
        "VarSparseCoder auto (exact)": lambda: [VarSparseCoder(
            d["W"].T, lam=LAM).fit_transform(d["Y"])],
    }[entry]()


@pytest.fixture
def transfer_on_cpu():
    """The CPU takes the GPU's road for models (a copy through a temporary checkpoint)."""
    before = _temp_checkpoints()
    previous = varsparse._native._set_transfer_on_cpu(True)
    try:
        yield
    finally:
        varsparse._native._set_transfer_on_cpu(previous)
    assert _temp_checkpoints() == before, "temporary checkpoints left behind"


@pytest.mark.parametrize("entry", ["Model.encode", "Model.encode_fista", "Model.decode",
                                   "VarSparseDictionaryLearning"])
def test_the_gpu_road_for_models_keeps_the_bits(data, entry, transfer_on_cpu):
    """A model computes on a GPU through a copy (saved to a temporary checkpoint, loaded onto
    the device), and a model trained there comes back the same way: on the CPU, that road
    gives the same bits as computing in place, and leaves no file behind."""
    on_road = ENTRY_POINTS[entry](data, "cpu")
    varsparse._native._set_transfer_on_cpu(False)
    in_place = ENTRY_POINTS[entry](data, "cpu")
    for a, b in zip(on_road, in_place):
        _same_bits(a, b)


def _gpu_answer(call):
    """``call()`` on a CUDA device: None after checking the error of a build without the
    ``cuda`` feature; skips (saying why) on a CUDA build without a usable GPU."""
    if not varsparse.CUDA_BUILD:
        with pytest.raises(CudaUnavailableError, match="no CUDA backend") as info:
            call()
        assert isinstance(info.value, varsparse.VarSparseError)
        return None
    try:
        return call()
    except CudaUnavailableError as e:
        reason = f"a CUDA build, but no usable GPU here ({e}): the GPU comparison did not run"
        print(reason)
        pytest.skip(reason)


def _close(gpu, cpu, rel):
    """As the library's own GPU tests (tests/cuda.rs): max |gpu - cpu| within rel of the
    largest |cpu|."""
    assert gpu.dtype == cpu.dtype == np.float32 and gpu.shape == cpu.shape
    scale = max(float(np.max(np.abs(cpu))), 1e-6)
    err = float(np.max(np.abs(gpu - cpu)))
    assert err <= rel * scale, f"max |gpu - cpu| = {err:.3e}, scale {scale:.3e}"


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_cuda_device(data, entry):
    """The default wheel: CudaUnavailableError, with the library's message. A CUDA build with
    a GPU: the GPU's results agree with the CPU's (the exact solver's are the CPU's bits, with
    the CLI's note as a UserWarning)."""
    call = ENTRY_POINTS[entry]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        on_gpu = _gpu_answer(lambda: call(data, "cuda"))
    if on_gpu is None:
        return
    cpu = call(data, "cpu")
    notes = [w for w in caught if issubclass(w.category, UserWarning)
             and "runs on the CPU" in str(w.message)]
    if entry in EXACT:
        assert notes, "no note that the exact solver ran on the CPU"
        for a, b in zip(on_gpu, cpu):
            _same_bits(a, b)
        return
    assert not notes
    # training is many steps, each as close as tests/cuda.rs checks: looser
    rel = 2e-2 if entry == "VarSparseDictionaryLearning" else 1e-3
    for a, b in zip(on_gpu, cpu):
        _close(a, b, rel)


def test_no_such_gpu(data):
    """A GPU ordinal past the last one is unavailable too (no panic)."""
    with pytest.raises(CudaUnavailableError):
        varsparse.fista(data["Y"], data["W"], LAM, device="cuda:4096")
    with pytest.raises(CudaUnavailableError):
        data["model"].encode(data["model_Y"], device="cuda:4096")


BAD_NAMES = ["gpu", "CUDA", "cuda:", "cuda:x", "cuda:-1", " cpu", ""]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_device_names_raise_value_error(data, name):
    d = data
    calls = [
        lambda: varsparse.fista(d["Y"], d["W"], LAM, device=name),
        lambda: varsparse.fista_mlp(d["Y"], *_mlp(), 0.01, device=name),
        lambda: varsparse.lasso(d["Y"], d["W"], LAM, device=name),
        lambda: d["model"].encode(d["model_Y"], device=name),
        lambda: d["model"].encode_fista(d["model_Y"], device=name),
        lambda: d["model"].decode(np.zeros((2, 4), np.float32), device=name),
        lambda: _learner(device=name).fit(d["X"]),
        lambda: VarSparseCoder(d["W"].T, lam=LAM, device=name).fit(d["Y"]).transform(d["Y"]),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="expected cpu, cuda or cuda:N"):
            call()


def test_device_names():
    assert varsparse._native.parse_device("cpu") == "cpu"
    assert varsparse._native.parse_device("cuda:0") == "cuda"
    assert varsparse._native.parse_device("cuda:3") == "cuda:3"
    with pytest.raises(TypeError, match="device must be a string"):
        varsparse.fista(np.zeros((2, 3), np.float32), np.eye(3, dtype=np.float32), LAM,
                        device=None)


def test_estimators_carry_device(data):
    est = VarSparseDictionaryLearning(device="cuda:1")
    assert est.get_params()["device"] == "cuda:1"
    assert VarSparseDictionaryLearning().get_params()["device"] == "cpu"
    assert clone(est).device == "cuda:1"
    coder = VarSparseCoder(data["W"].T, device="cuda")
    assert coder.get_params()["device"] == "cuda"
    assert VarSparseCoder(data["W"].T).get_params()["device"] == "cpu"
    # a model fitted on one device computes on another: it lives on the host
    fitted = _learner().fit(data["X"])
    Z = fitted.transform(data["Y"])
    fitted.set_params(device="cuda")
    got = _gpu_answer(lambda: fitted.transform(data["Y"]))
    if got is not None:
        _close(got, Z, 1e-3)
    # loading a checkpoint sets the device like any parameter
    with tempfile.TemporaryDirectory() as tmp:
        fitted.save(os.path.join(tmp, "ck"))
        back = VarSparseDictionaryLearning.load(os.path.join(tmp, "ck"), device="cpu")
    assert back.device == "cpu"
    _same_bits(back.transform(data["Y"]), Z)
