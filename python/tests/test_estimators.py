"""The scikit-learn estimators on MNIST subsets, against the CLI's training, and Ctrl-C."""

import pickle
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import varsparse
from varsparse import VarSparseCoder, VarSparseDictionaryLearning
from conftest import LAM


def _psnr(x, rec, scale=0.3081):
    mse = np.mean(((x - rec) * scale) ** 2, axis=1)
    return float(np.mean(10 * np.log10(1.0 / mse)))


@pytest.fixture(scope="module")
def fitted(mnist):
    est = VarSparseDictionaryLearning(preset="mnist-vdl", max_epochs=3, random_state=3,
                                      validation_fraction=0.1, pixel_scale=0.3081)
    return est.fit(mnist["train_images"])


def test_fit_transform_inverse_on_mnist(fitted, mnist):
    est = fitted
    X = mnist["test_images"][:500]
    assert est.n_features_in_ == 784
    assert est.components_.shape == (128, 784)
    assert est.params_["energy"]["lambda"] == 0.02
    assert [h["epoch"] for h in est.history_] == [1, 2, 3]
    assert est.history_[0]["val"]["n"] == 200  # 10% of 2,000 held out
    Z = est.transform(X)
    assert Z.shape == (500, 128) and Z.dtype == np.float32 and Z.min() >= 0
    sparsity = np.mean(Z == 0)
    assert 0.3 < sparsity < 1.0
    rec = est.inverse_transform(Z)
    # training improves the validation energy and PSNR epoch by epoch
    val = [h["val"] for h in est.history_]
    assert val[0]["energy"] > val[1]["energy"] > val[2]["energy"]
    assert val[0]["psnr"] < val[1]["psnr"] < val[2]["psnr"]
    # the history's PSNR is the one of D(E(y)) at the pixel scale: a test image's is close
    assert abs(_psnr(X, rec) - val[2]["psnr"]) < 1.0
    # the linear decoder reconstructs with its atoms: Z @ components_
    np.testing.assert_allclose(rec, Z @ est.components_, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(est.atoms(), est.components_)
    # FISTA's codes have a lower energy than the encoder's (its warm start and target), the
    # energy of docs/CONVENTIONS.md §1 computed here in float64 per batch of 250
    Zf = est.transform(X, method="fista")
    e = est.params_["energy"]

    def energy(Z):
        total = 0.0
        for b in range(0, len(X), 250):
            z, x = Z[b:b + 250].astype(np.float64), X[b:b + 250].astype(np.float64)
            r = x - est.inverse_transform(Z[b:b + 250]).astype(np.float64)
            total += np.sum(r ** 2) / X.shape[1] + e["lambda"] * np.abs(z).sum()
            total += e["beta"] * np.sum(np.maximum(e["threshold"] - z.std(0, ddof=1), 0) ** 2)
            total += e["gamma"] / Z.shape[1] * np.sum((z - Z_enc[b:b + 250]) ** 2)
        return total / len(X)

    Z_enc = Z.astype(np.float64)
    _, report = est.model_.encode_fista(X)
    assert energy(Zf) == pytest.approx(report["mean_energy"], rel=1e-3)
    assert energy(Zf) < energy(Z)
    with pytest.raises(ValueError, match="method"):
        est.transform(X, method="lars")


def test_matches_cli_training(cli, tmp_path, mnist):
    """The estimator's training is the CLI's: same data, seed and preset give the same bits."""
    X = mnist["train_images"][:1000]
    V = mnist["val_images"][:100]
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "V.npy", V)
    cli("train", "--preset", "mnist-sdl", "--epochs", "2", "--seed", "5", "--input",
        tmp_path / "X.npy", "--val", tmp_path / "V.npy", "--out", tmp_path / "run")
    est = VarSparseDictionaryLearning(preset="mnist-sdl", max_epochs=2, random_state=5).fit(X)
    W_cli = np.load(tmp_path / "run" / "latest" / "decoder_W.npy")
    np.testing.assert_array_equal(est.components_.T.view(np.uint32), W_cli.view(np.uint32))
    cli_model = varsparse.load(tmp_path / "run" / "latest")
    np.testing.assert_array_equal(est.transform(V), cli_model.encode(V))


def test_save_load_pickle(fitted, mnist, tmp_path):
    X = mnist["test_images"][:100]
    Z = fitted.transform(X)
    fitted.save(tmp_path / "ck")
    back = VarSparseDictionaryLearning.load(tmp_path / "ck", n_threads=1)
    assert back.n_threads == 1 and back.random_state == 3 and back.n_components == 128
    np.testing.assert_array_equal(back.transform(X), Z)
    np.testing.assert_array_equal(varsparse.load(tmp_path / "ck").encode(X), Z)
    clone = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(clone.transform(X), Z)


def test_one_hidden_layer_decoder(mnist):
    X = mnist["train_images"][:500]
    est = VarSparseDictionaryLearning(preset="mnist-vdl-nl", n_components=16, hidden=32,
                                      eta=0.05, max_epochs=1, random_state=0).fit(X)
    assert est.params_["kind"] == {"kind": "one_hidden", "hidden": 32}
    assert not hasattr(est, "components_")
    assert est.atoms().shape == (16, 784)
    assert est.inverse_transform(est.transform(X[:10])).shape == (10, 784)
    dec = est.model_.decoder_params()
    assert dec["W1"].shape == (32, 16) and dec["W2"].shape == (784, 32)
    assert dec["b1"].shape == (32,)


def test_bad_hyper_parameters_raise_value_error(mnist):
    X = mnist["train_images"][:300]
    with pytest.raises(ValueError, match="preset"):
        VarSparseDictionaryLearning(preset="cifar").fit(X)
    with pytest.raises(ValueError, match="lambda"):
        VarSparseDictionaryLearning(lam=-1.0, max_epochs=1).fit(X)
    with pytest.raises(ValueError, match="decoder"):
        VarSparseDictionaryLearning(decoder="conv", max_epochs=1).fit(X)


def test_sparse_coder(mnist, unit_dictionary):
    X = mnist["test_images"][:200]
    D = unit_dictionary.T  # atoms as rows
    coder = VarSparseCoder(D, lam=LAM).fit(X)
    Z = coder.transform(X)
    np.testing.assert_array_equal(Z, varsparse.lasso(X, unit_dictionary, LAM)[0])
    Zf = VarSparseCoder(D, lam=LAM, method="fista").fit_transform(X)
    np.testing.assert_array_equal(Zf, varsparse.fista(X, unit_dictionary, LAM)[0])
    Zh = VarSparseCoder(D, lam=LAM, beta=10.0).fit_transform(X)  # auto -> FISTA
    np.testing.assert_array_equal(
        Zh, varsparse.fista(X, unit_dictionary, LAM, beta=10.0)[0])
    signed = VarSparseCoder(D, lam=LAM, positive=False).fit_transform(X)
    assert signed.min() < 0
    with pytest.raises(ValueError, match="beta = gamma = 0"):
        VarSparseCoder(D, method="lasso", gamma=1.0).fit(X).transform(X)
    with pytest.raises(ValueError, match="features"):
        VarSparseCoder(D).fit(X[:, :100])


def test_ctrl_c_interrupts_fit_cleanly(tmp_path):
    script = textwrap.dedent("""
        import signal, sys, numpy as np
        # Python's own handler, even where SIGINT was inherited as ignored (a background job)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        from varsparse import VarSparseDictionaryLearning
        X = np.random.default_rng(0).standard_normal((5000, 784)).astype(np.float32)
        est = VarSparseDictionaryLearning(max_epochs=1000, random_state=0)
        print("fitting", flush=True)
        try:
            est.fit(X)
        except KeyboardInterrupt:
            print("KeyboardInterrupt", hasattr(est, "model_"), flush=True)
            sys.exit(0)
        print("finished", flush=True)
    """)
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    assert p.stdout.readline().strip() == "fitting"
    time.sleep(1.5)
    t0 = time.perf_counter()
    p.send_signal(signal.SIGINT)
    try:
        out, err = p.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        raise
    stopped_after = time.perf_counter() - t0
    assert p.returncode == 0, f"exit {p.returncode}; stdout {out!r}; stderr {err!r}"
    assert out.strip() == "KeyboardInterrupt False", f"stdout {out!r}; stderr {err!r}"
    # training would run for minutes: it stopped at the next batch (slack for a loaded machine)
    assert stopped_after < 10, f"took {stopped_after:.1f} s to stop"
