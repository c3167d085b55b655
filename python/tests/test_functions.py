"""The functions against the Rust command-line tool's outputs on the same inputs (same bits),
their handling of layouts and dtypes, their errors, and the GIL."""

import json
import threading
import time

import numpy as np
import pytest

import varsparse
from conftest import LAM, ROOT


def _same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype == np.float32
    assert a.shape == b.shape
    assert np.array_equal(a.view(np.uint32), b.view(np.uint32)), (
        f"{np.count_nonzero(a != b)} of {a.size} values differ, max |diff| "
        f"{np.max(np.abs(a - b))}")


def _infer_cli(cli, tmp_path, decoder_args, Y, lam, extra=(), warm=None):
    np.save(tmp_path / "Y.npy", Y)
    args = ["infer", *decoder_args, "--input", tmp_path / "Y.npy", "--lambda", repr(lam),
            "--out", tmp_path / "Z.npy", "--report", tmp_path / "R.json", *extra]
    if warm is not None:
        np.save(tmp_path / "E.npy", warm)
        args += ["--warm-start", tmp_path / "E.npy"]
    cli(*args)
    return np.load(tmp_path / "Z.npy"), json.loads((tmp_path / "R.json").read_text())


# (python keyword arguments, the same as CLI flags)
LINEAR_CASES = {
    "defaults": ({}, []),
    "hinge+proximity+warm+constant step": (
        dict(beta=10.0, threshold=0.5, gamma=5.0, step=0.5, warm=True),
        ["--beta", "10.0", "--threshold", "0.5", "--gamma", "5.0", "--step", "0.5"]),
    "backtracking+signed": (dict(backtracking=True, signed=True),
                            ["--backtracking", "--signed"]),
    "direct, tol 0, 30 iterations, batch 128": (
        dict(direct=True, tol=0.0, max_iter=30, batch_size=128),
        ["--direct", "--tol", "0.0", "--max-iter", "30", "--batch-size", "128"]),
    "adaptive restart, constant step, hinge": (
        dict(step=0.5, beta=10.0, adaptive_restart=True),
        ["--step", "0.5", "--beta", "10.0", "--adaptive-restart"]),
}


@pytest.mark.parametrize("case", list(LINEAR_CASES))
def test_fista_matches_cli(cli, tmp_path, mnist, unit_dictionary, case):
    kwargs, flags = LINEAR_CASES[case]
    kwargs = dict(kwargs)
    Y = mnist["test_images"][:300]
    warm = None
    if kwargs.pop("warm", False):
        warm = np.abs(np.random.default_rng(3).standard_normal((300, 64))).astype(np.float32)
    np.save(tmp_path / "W.npy", unit_dictionary)
    # the CLI's default solver is the exact lasso where it applies: ask it for FISTA
    z_cli, r_cli = _infer_cli(cli, tmp_path, ["--dictionary", tmp_path / "W.npy"], Y, LAM,
                              [*flags, "--solver", "fista"], warm)
    z, report = varsparse.fista(Y, unit_dictionary, LAM, warm_start=warm, **kwargs)
    _same_bits(z, z_cli)
    assert 0.01 < np.mean(z != 0)  # codes worth comparing
    assert report["rows"] == r_cli["rows"] == 300
    assert report["mean_energy"] == r_cli["mean_energy"]
    assert report["mean_steps"] == r_cli["mean_steps"]
    assert report["batches"] == r_cli["batches"]
    assert report["params"] == r_cli["params"]


def _mlp(seed=11, l=32, m=48, d=784):
    rng = np.random.default_rng(seed)
    W1 = (rng.standard_normal((m, l)) / np.sqrt(l)).astype(np.float32)
    b1 = (0.1 * rng.standard_normal(m)).astype(np.float32)
    W2 = (rng.standard_normal((d, m)) / np.sqrt(m)).astype(np.float32)
    return W1, b1, W2


MLP_CASES = {
    "defaults (backtracking)": ({}, []),
    "constant step, hinge, direct": (dict(step=0.5, beta=10.0, direct=True, max_iter=50),
                                     ["--step", "0.5", "--beta", "10.0", "--direct",
                                      "--max-iter", "50"]),
    "constant step, gram path": (dict(step=0.5, tol=0.0, max_iter=40),
                                 ["--step", "0.5", "--tol", "0.0", "--max-iter", "40"]),
    "constant step, adaptive restart": (dict(step=0.5, max_iter=60, adaptive_restart=True),
                                        ["--step", "0.5", "--max-iter", "60",
                                         "--adaptive-restart"]),
}


@pytest.mark.parametrize("case", list(MLP_CASES))
def test_fista_mlp_matches_cli(cli, tmp_path, mnist, case):
    kwargs, flags = MLP_CASES[case]
    W1, b1, W2 = _mlp()
    # `infer --mlp` reads b1 as a 2-D (1, m) array
    for name, a in (("W1", W1), ("b1", b1[None, :]), ("W2", W2)):
        np.save(tmp_path / f"{name}.npy", a)
    Y = mnist["test_images"][:260]
    mlp = ",".join(str(tmp_path / f"{n}.npy") for n in ("W1", "b1", "W2"))
    z_cli, r_cli = _infer_cli(cli, tmp_path, ["--mlp", mlp], Y, 0.01, flags)
    z, report = varsparse.fista_mlp(Y, W1, b1, W2, 0.01, **kwargs)
    _same_bits(z, z_cli)
    assert 0.05 < np.mean(z == 0) < 0.99  # codes worth comparing
    assert report["batches"] == r_cli["batches"]


def test_lasso_matches_cli_exact_solver(cli, tmp_path, mnist, unit_dictionary):
    """Against `infer --solver exact` where the CLI has it (added on another branch)."""
    help_text = cli("infer", "--help").stdout
    if "--solver" not in help_text:
        pytest.skip("this CLI's infer has no --solver flag (no exact solver to compare with)")
    Y = mnist["test_images"][:300]
    np.save(tmp_path / "W.npy", unit_dictionary)
    z_cli, _ = _infer_cli(cli, tmp_path, ["--dictionary", tmp_path / "W.npy"], Y, LAM,
                          ["--solver", "exact"])
    z, _ = varsparse.lasso(Y, unit_dictionary, LAM)
    _same_bits(z, z_cli)
    assert 0.5 < np.mean(z == 0) < 0.99


def _objective(Y, W, Z, lam):
    d = Y.shape[1]
    Y, W, Z = (a.astype(np.float64) for a in (Y, W, Z))
    return np.mean(np.sum((Y - Z @ W.T) ** 2, axis=1) / d + lam * np.abs(Z).sum(axis=1))


@pytest.mark.parametrize("positive", [True, False])
def test_lasso_is_optimal(mnist, unit_dictionary, positive):
    Y = mnist["test_images"][:200]
    W = unit_dictionary
    z, report = varsparse.lasso(Y, W, LAM, positive=positive)
    assert z.dtype == np.float32 and z.shape == (200, 64)
    assert report["n"] == 200
    assert report["max_kkt_violation"] < 1e-4
    if positive:
        assert z.min() >= 0
    else:
        assert z.min() < 0
    obj = _objective(Y, W, z, LAM)
    assert abs(obj - report["mean_objective"]) < 1e-4 * obj
    # FISTA run to a tight tolerance cannot beat the exact optimum
    zf, _ = varsparse.fista(Y, W, LAM, tol=0.0, max_iter=500, signed=not positive)
    assert obj <= _objective(Y, W, zf, LAM) * (1 + 1e-6)


def test_views_and_dtypes_give_the_same_codes(mnist, unit_dictionary):
    base = mnist["test_images"][:400]
    Y = np.ascontiguousarray(base[::2])  # 200 rows, C order
    z, _ = varsparse.fista(Y, unit_dictionary, LAM)
    for variant in (np.asfortranarray(Y), base[::2], Y.astype(np.float64)):
        zv, _ = varsparse.fista(variant, np.asfortranarray(unit_dictionary), LAM)
        _same_bits(zv, z)
    zl, _ = varsparse.lasso(Y, unit_dictionary, LAM)
    zl2, _ = varsparse.lasso(base[::2], unit_dictionary.astype(np.float64), LAM)
    _same_bits(zl, zl2)
    # the thread count does not change the bits
    z1, _ = varsparse.fista(Y, unit_dictionary, LAM, n_threads=1)
    _same_bits(z1, z)


def test_errors_are_python_errors(tmp_path, unit_dictionary):
    Y = np.zeros((5, 784), np.float32)
    with pytest.raises(ValueError, match="shape mismatch"):
        varsparse.fista(Y[:, :100], unit_dictionary, LAM)
    with pytest.raises(ValueError, match="lambda"):
        varsparse.lasso(Y, unit_dictionary, -1.0)
    with pytest.raises(ValueError, match="max_iter"):
        varsparse.fista(Y, unit_dictionary, LAM, max_iter=0)
    bad = Y.copy()
    bad[2, 3] = np.nan
    with pytest.raises(ValueError, match="non-finite input"):
        varsparse.fista(bad, unit_dictionary, LAM)
    with pytest.raises(ValueError, match="not both"):
        varsparse.fista(Y, unit_dictionary, LAM, step=0.5, backtracking=True)
    with pytest.raises(ValueError, match="2-D"):
        varsparse.fista(Y[0], unit_dictionary, LAM)
    with pytest.raises(OSError):
        varsparse.load(tmp_path / "no-such-checkpoint")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "model.json").write_text("{not json")
    with pytest.raises(varsparse.VarSparseError):
        varsparse.load(tmp_path / "broken")
    assert issubclass(varsparse.VarSparseError, Exception)


def test_the_gil_is_released(mnist, unit_dictionary):
    """Another Python thread runs while FISTA computes."""
    # about 0.6 s of work on a 2-core machine (0.2 s with 10 tiles, too close to the bound)
    Y = np.tile(mnist["test_images"][:1000], (30, 1))
    done = threading.Event()
    t0 = time.perf_counter()

    def work():
        varsparse.fista(Y, unit_dictionary, LAM, tol=0.0, max_iter=100, n_threads=1)
        done.set()

    t = threading.Thread(target=work)
    t.start()
    ticks = 0
    while not done.is_set():
        ticks += 1
        time.sleep(0.001)
    t.join()
    elapsed = time.perf_counter() - t0
    assert elapsed > 0.2, f"the call took {elapsed:.3f} s, too short to tell"
    # with the GIL held, this loop would not run at all until the call returned (a tick or two)
    assert ticks > 50, f"{ticks} ticks in {elapsed:.3f} s"


FIXTURES = ROOT / "tests" / "fixtures"


def test_load_matches_cli_encode(cli, tmp_path):
    ck = FIXTURES / "checkpoint-v1"
    Y = np.load(FIXTURES / "checkpoint-v1-input.npy")
    model = varsparse.load(ck)
    assert (model.input_dim, model.code_dim) == (16, 4)
    cli("encode", "--model", ck, "--input", FIXTURES / "checkpoint-v1-input.npy", "--out",
        tmp_path / "Z.npy")
    cli("encode", "--model", ck, "--input", FIXTURES / "checkpoint-v1-input.npy", "--out",
        tmp_path / "ZF.npy", "--fista")
    _same_bits(model.encode(Y), np.load(tmp_path / "Z.npy"))
    zf, report = model.encode_fista(Y)
    _same_bits(zf, np.load(tmp_path / "ZF.npy"))
    assert report["rows"] == 100 and len(report["batches"]) == 1


def test_model_round_trip(tmp_path):
    ck = FIXTURES / "checkpoint-v1"
    Y = np.load(FIXTURES / "checkpoint-v1-input.npy")
    model = varsparse.load(ck)
    # the fixture's codes, as the version that wrote it gave them
    _same_bits(model.encode(Y), np.load(FIXTURES / "checkpoint-v1-codes.npy"))
    atoms = model.atoms()
    assert atoms.shape == (4, 16)
    z = model.encode(Y)
    rec = model.decode(z)
    assert rec.shape == Y.shape and rec.dtype == np.float32
    # atoms of the one-hidden-layer decoder are D(e_i) - D(0)
    zero = model.decode(np.zeros((1, 4), np.float32))
    e0 = model.decode(np.eye(4, dtype=np.float32)[:1])
    np.testing.assert_allclose(atoms[0], (e0 - zero)[0], rtol=1e-5, atol=1e-6)
    model.save(tmp_path / "copy")
    again = varsparse.load(tmp_path / "copy")
    _same_bits(again.encode(Y), z)
    dec = again.decoder_params()
    assert set(dec) == {"W1", "b1", "W2"}
    with pytest.raises(ValueError, match="shape mismatch"):
        model.decode(np.zeros((2, 5), np.float32))
