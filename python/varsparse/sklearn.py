"""scikit-learn estimators over varsparse's native functions.

- :class:`VarSparseDictionaryLearning`: the paper's training (a LISTA encoder and a linear or
  one-hidden-layer decoder, FISTA codes as targets, the variance hinge), from a preset or every
  hyper-parameter.
- :class:`VarSparseCoder`: codes of samples for a fixed dictionary, like scikit-learn's
  ``SparseCoder``, with the exact lasso or FISTA.

Both compute in float32 (float64 input is converted) and return float32 codes, on the
``device`` given to the constructor (``"cpu"``, ``"cuda"``, ``"cuda:N"``; see :mod:`varsparse`).
"""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from . import _device, _exact_on_cpu_note, _lasso, _native
from . import fista as _fista

__all__ = ["VarSparseDictionaryLearning", "VarSparseCoder"]

# estimator parameter -> (path in the library's ModelParams, type)
_OVERRIDES = {
    "n_components": (("code_dim",), int),
    "lam": (("energy", "lambda"), float),
    "beta": (("energy", "beta"), float),
    "threshold": (("energy", "threshold"), float),
    "gamma": (("energy", "gamma"), float),
    "encoder_iters": (("encoder_iters",), int),
    "eta": (("eta",), float),
    "fista_max_iter": (("max_iter",), int),
    "fista_tol": (("tol",), float),
    "lr_decoder": (("lr_decoder",), float),
    "lr_encoder": (("lr_encoder",), float),
    "wd_hidden_bias": (("wd_hidden_bias",), float),
    "wd_encoder_bias": (("wd_encoder_bias",), float),
    "column_norm": (("column_norm",), bool),
    "max_epochs": (("epochs",), int),
    "batch_size": (("batch_size",), int),
}


def _seed(random_state):
    """An integer seed for the library: the int itself, or a draw from the RandomState."""
    if isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool):
        return int(random_state) % (2**63)
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


def _to_f32(X):
    return X if X.dtype == np.float32 else X.astype(np.float32)


class VarSparseDictionaryLearning(TransformerMixin, BaseEstimator):
    """Sparse dictionary learning with variance-regularised codes (the paper's training).

    Trains a LISTA encoder and a decoder (linear, or one hidden layer) on the rows of ``X``:
    each training step infers codes with FISTA (warm-started from, and drawn towards, the
    encoder's codes), takes an Adam step on the decoder towards reconstructing ``X`` from them,
    and one on the encoder towards predicting them. ``transform`` gives the encoder's codes
    (fast, amortised) or FISTA's (``method="fista"``).

    Every hyper-parameter defaults to ``None``, meaning the preset's value (see
    :func:`varsparse.preset_params`); the energy's scaling is docs/CONVENTIONS.md §1.

    Parameters
    ----------
    n_components : int, optional
        Code dimension ``l`` (preset: 128 for MNIST, 256 for patches).
    preset : str
        One of :func:`varsparse.presets`: ``"mnist-vdl"`` (default, variance-regularised linear
        dictionary), ``"mnist-sdl"`` (standard dictionary learning with column-normalised atoms),
        ``"mnist-vdl-nl"``, ``"mnist-sdl-nl"`` (one-hidden-layer decoders), and the ``patches-*``
        ones.
    decoder : {"linear", "one_hidden"}, optional
        The decoder's kind.
    hidden : int, optional
        Hidden width ``m`` of a one-hidden-layer decoder.
    lam, beta, threshold, gamma : float, optional
        The energy's sparsity weight, variance hinge weight and threshold, proximity weight.
    encoder_iters : int, optional
        LISTA iterations.
    eta, fista_max_iter, fista_tol : optional
        FISTA's constant step, iteration cap and relative tolerance during training.
    lr_decoder, lr_encoder : float, optional
        Adam learning rates.
    wd_hidden_bias, wd_encoder_bias : float, optional
        Weight decay of the hidden bias ``b1`` and of the encoder's bias.
    column_norm : bool, optional
        Renormalise the decoder's columns after each step (SDL).
    max_epochs : int, optional
        Epochs (passes over ``X``; the preset's 200 or 100 are the paper's full runs).
    batch_size : int, optional
        Training batch size (capped at the number of training samples).
    validation_fraction : float
        Fraction of ``X`` held out to validate after each epoch (reported in ``history_``);
        0 (default) trains on all of ``X`` and validates on nothing.
    pixel_scale : float
        The factor that maps a residual to pixel units for the PSNR in ``history_``
        (MNIST normalised by :func:`varsparse.load_mnist`: 0.3081).
    random_state : int, RandomState or None
        Seeds the initialisation, the epochs' shuffles and the validation split.
    n_threads : int, optional
        CPU threads (default: all available); results do not depend on it.
    device : str
        Where ``fit``, ``transform`` and ``inverse_transform`` compute: ``"cpu"`` (default),
        ``"cuda"`` or ``"cuda:N"``. A CUDA device needs a wheel built with the ``cuda``
        feature and a GPU, else :class:`varsparse.CudaUnavailableError`; its results agree with
        the CPU's to rounding, not bit for bit. The fitted model lives on the host (``model_``,
        ``components_``, pickles, checkpoints are the same whatever the device); on a GPU each
        call copies it there. Checked when used, not by the constructor.

    Attributes
    ----------
    model_ : varsparse.Model
        The trained model (encoder and decoder).
    components_ : ndarray (n_components, n_features)
        The atoms as rows, for a linear decoder (for a one-hidden-layer decoder, see
        :meth:`atoms`).
    params_ : dict
        The hyper-parameters the model was trained with.
    history_ : list of dict
        Per epoch: training statistics (``train``), validation statistics (``val``), timings.
    n_features_in_ : int
    n_components_ : int
    """

    def __init__(self, n_components=None, *, preset="mnist-vdl", decoder=None, hidden=None,
                 lam=None, beta=None, threshold=None, gamma=None, encoder_iters=None, eta=None,
                 fista_max_iter=None, fista_tol=None, lr_decoder=None, lr_encoder=None,
                 wd_hidden_bias=None, wd_encoder_bias=None, column_norm=None, max_epochs=None,
                 batch_size=None, validation_fraction=0.0, pixel_scale=1.0, random_state=None,
                 n_threads=None, device="cpu"):
        self.n_components = n_components
        self.preset = preset
        self.decoder = decoder
        self.hidden = hidden
        self.lam = lam
        self.beta = beta
        self.threshold = threshold
        self.gamma = gamma
        self.encoder_iters = encoder_iters
        self.eta = eta
        self.fista_max_iter = fista_max_iter
        self.fista_tol = fista_tol
        self.lr_decoder = lr_decoder
        self.lr_encoder = lr_encoder
        self.wd_hidden_bias = wd_hidden_bias
        self.wd_encoder_bias = wd_encoder_bias
        self.column_norm = column_norm
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.validation_fraction = validation_fraction
        self.pixel_scale = pixel_scale
        self.random_state = random_state
        self.n_threads = n_threads
        self.device = device

    def _model_params(self, n_train):
        """The library's ModelParams: the preset's, with every non-None parameter set."""
        if self.preset not in _native.preset_names():
            raise ValueError(
                f"preset must be one of {list(_native.preset_names())}, got {self.preset!r}")
        p = json.loads(_native.preset_params(self.preset))
        for name, (path, typ) in _OVERRIDES.items():
            value = getattr(self, name)
            if value is None:
                continue
            node = p
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = typ(value)
        hidden = self.hidden if self.hidden is not None else p["kind"].get("hidden", 1024)
        if self.decoder is not None:
            if self.decoder == "linear":
                p["kind"] = {"kind": "linear"}
            elif self.decoder == "one_hidden":
                p["kind"] = {"kind": "one_hidden", "hidden": int(hidden)}
            else:
                raise ValueError(
                    f"decoder must be 'linear' or 'one_hidden', got {self.decoder!r}")
        elif self.hidden is not None and p["kind"]["kind"] == "one_hidden":
            p["kind"]["hidden"] = int(self.hidden)
        p["seed"] = _seed(self.random_state)
        p["batch_size"] = min(p["batch_size"], n_train)
        return p

    def fit(self, X, y=None):
        """Trains the encoder and decoder on the rows of ``X`` (n_samples, n_features).

        ``y`` is ignored. Ctrl-C stops training between batches with ``KeyboardInterrupt``
        (the estimator then stays as it was).
        """
        device = _device(self.device)
        X = validate_data(self, X, dtype=[np.float32, np.float64])
        X = _to_f32(X)
        n = X.shape[0]
        frac = float(self.validation_fraction)
        if not 0.0 <= frac < 1.0:
            raise ValueError(f"validation_fraction must be in [0, 1), got {frac}")
        n_val = int(round(frac * n)) if frac > 0 else 0
        if frac > 0:
            n_val = max(1, min(n_val, n - 1))
        n_train = n - n_val
        if n_val:
            order = check_random_state(self.random_state).permutation(n)
            X_train, X_val = X[order[n_val:]], X[order[:n_val]]
        else:
            X_train, X_val = X, X[:0]
        params = self._model_params(n_train)
        if params["energy"]["beta"] > 0 and n_train < 2:
            raise ValueError(
                f"the variance hinge (beta > 0) needs at least 2 training samples, got "
                f"{n_train} sample{'s' if n_train != 1 else ''}")
        model, history = _native.fit(X_train, X_val, json.dumps(params), float(self.pixel_scale),
                                     None, self.n_threads, device)
        self.model_ = model
        self.params_ = json.loads(model.params_json)
        self.history_ = json.loads(history)
        self.n_components_ = model.code_dim
        self._set_components()
        return self

    def _set_components(self):
        dec = self.model_.decoder_params()
        if "W" in dec:
            self.components_ = np.ascontiguousarray(dec["W"].T)
        elif hasattr(self, "components_"):
            del self.components_

    def transform(self, X, method="encoder"):
        """Codes (n_samples, n_components) of the rows of ``X``, float32.

        ``method="encoder"`` (default): the encoder's amortised codes, one pass of LISTA.
        ``method="fista"``: FISTA's codes warm-started from (and drawn towards) the encoder's,
        with the model's inference parameters, in batches of the training batch size (the
        variance hinge couples the samples of a batch).
        """
        check_is_fitted(self)
        device = _device(self.device)
        X = _to_f32(validate_data(self, X, dtype=[np.float32, np.float64], reset=False))
        if method == "encoder":
            return self.model_.encode(X, self.n_threads, device)
        if method == "fista":
            return self.model_.encode_fista(X, self.n_threads, device)[0]
        raise ValueError(f"method must be 'encoder' or 'fista', got {method!r}")

    def inverse_transform(self, X):
        """Reconstructions (n_samples, n_features) of codes ``X`` (n_samples, n_components)."""
        check_is_fitted(self)
        device = _device(self.device)
        Z = np.asarray(X)
        if Z.ndim != 2 or Z.shape[1] != self.n_components_:
            raise ValueError(
                f"codes must be (n_samples, {self.n_components_}), got shape {Z.shape}")
        return self.model_.decode(_to_f32(Z.astype(np.float32, copy=False)), self.n_threads,
                                  device)

    def atoms(self):
        """The decoder's atoms (n_components, n_features): a linear decoder's columns of ``W``;
        for a one-hidden-layer decoder ``D(e_i) - D(0)``."""
        check_is_fitted(self)
        return self.model_.atoms()

    def save(self, path):
        """Writes the fitted model as a checkpoint directory (loadable by
        :meth:`load`, :func:`varsparse.load` and the ``varsparse`` command-line tool)."""
        check_is_fitted(self)
        self.model_.save(str(path))

    @classmethod
    def load(cls, path, **params):
        """An estimator fitted from a checkpoint directory (``varsparse train``'s or
        :meth:`save`'s); ``params`` set estimator parameters such as ``n_threads`` or
        ``device``.

        The estimator's hyper-parameters are set from the checkpoint's.
        """
        model = _native.load(str(path))
        p = json.loads(model.params_json)
        kind = p["kind"]
        est = cls(
            n_components=p["code_dim"], preset=p.get("preset") or "mnist-vdl",
            decoder=kind["kind"], hidden=kind.get("hidden"), lam=p["energy"]["lambda"],
            beta=p["energy"]["beta"], threshold=p["energy"]["threshold"],
            gamma=p["energy"]["gamma"], encoder_iters=p["encoder_iters"], eta=p["eta"],
            fista_max_iter=p["max_iter"], fista_tol=p["tol"], lr_decoder=p["lr_decoder"],
            lr_encoder=p["lr_encoder"], wd_hidden_bias=p["wd_hidden_bias"],
            wd_encoder_bias=p["wd_encoder_bias"], column_norm=p["column_norm"],
            max_epochs=p["epochs"], batch_size=p["batch_size"], random_state=p["seed"])
        est.set_params(**params)
        est.model_ = model
        est.params_ = p
        est.history_ = []
        est.n_components_ = model.code_dim
        est.n_features_in_ = model.input_dim
        est._set_components()
        return est

    # Pickling: the native model travels as its checkpoint files.
    def __getstate__(self):
        state = self.__dict__.copy()
        model = state.pop("model_", None)
        if model is not None:
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "model")
                model.save(path)
                state["_model_files"] = {
                    name: open(os.path.join(path, name), "rb").read()
                    for name in sorted(os.listdir(path))
                }
        return state

    def __setstate__(self, state):
        files = state.pop("_model_files", None)
        self.__dict__.update(state)
        if files is not None:
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "model")
                os.mkdir(path)
                for name, data in files.items():
                    with open(os.path.join(path, name), "wb") as f:
                        f.write(data)
                self.model_ = _native.load(path)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]
        tags.non_deterministic = False
        return tags


class VarSparseCoder(TransformerMixin, BaseEstimator):
    """Sparse codes of samples for a fixed dictionary (like scikit-learn's ``SparseCoder``).

    Parameters
    ----------
    dictionary : array (n_components, n_features)
        The atoms as rows (scikit-learn's layout; the library's ``W`` is its transpose).
    lam : float
        Sparsity weight: per sample ``(1/d) ||x - z D||^2 + lam ||z||_1`` (scikit-learn's
        ``alpha`` is ``lam / 2``).
    method : {"auto", "lasso", "fista"}
        ``"lasso"``: the exact active-set solver. ``"fista"``: FISTA with the options below.
        ``"auto"`` (default): the exact solver when the problem is a lasso (``beta = gamma =
        0``), FISTA otherwise.
    positive : bool
        Non-negative codes (default) or signed ones.
    beta, threshold, gamma : float
        FISTA only: the variance hinge (per batch of ``batch_size`` rows) and the proximity
        weight (to zero codes, as there is no warm start here).
    max_iter, tol, step, backtracking, batch_size : FISTA's options, as in
        :func:`varsparse.fista`.
    n_threads : int, optional
        CPU threads (default: all available).
    device : str
        Where FISTA computes: ``"cpu"`` (default), ``"cuda"`` or ``"cuda:N"`` (see
        :func:`varsparse.fista`). The exact solver (``"lasso"``, and ``"auto"`` when it picks
        it) runs on the CPU whatever the device, with a :class:`UserWarning` when the device is
        not the CPU, as :func:`varsparse.lasso` does; an unavailable CUDA device raises
        :class:`varsparse.CudaUnavailableError` with either solver.

    Attributes
    ----------
    components_ : ndarray (n_components, n_features), the dictionary as float32
    n_components_ : int
    n_features_in_ : int
    """

    def __init__(self, dictionary, *, lam=0.02, method="auto", positive=True, beta=0.0,
                 threshold=0.5, gamma=0.0, max_iter=200, tol=1e-3, step=None,
                 backtracking=False, batch_size=250, n_threads=None, device="cpu"):
        self.dictionary = dictionary
        self.lam = lam
        self.method = method
        self.positive = positive
        self.beta = beta
        self.threshold = threshold
        self.gamma = gamma
        self.max_iter = max_iter
        self.tol = tol
        self.step = step
        self.backtracking = backtracking
        self.batch_size = batch_size
        self.n_threads = n_threads
        self.device = device

    def fit(self, X, y=None):
        """Checks ``X`` against the dictionary and stores it as ``components_``; learns
        nothing (the dictionary is fixed). ``y`` is ignored."""
        D = np.asarray(self.dictionary)
        if D.ndim != 2:
            raise ValueError(f"dictionary must be 2-D (n_components, n_features), got {D.shape}")
        X = validate_data(self, X, dtype=[np.float32, np.float64])
        if X.shape[1] != D.shape[1]:
            raise ValueError(
                f"X has {X.shape[1]} features but the dictionary's atoms have {D.shape[1]}")
        self.components_ = np.ascontiguousarray(D, dtype=np.float32)
        self.n_components_ = D.shape[0]
        return self

    def transform(self, X):
        """Codes (n_samples, n_components) of the rows of ``X``, float32."""
        check_is_fitted(self)
        X = _to_f32(validate_data(self, X, dtype=[np.float32, np.float64], reset=False))
        W = self.components_.T  # (d, l): a view, read in place
        method = self.method
        if method not in ("auto", "lasso", "fista"):
            raise ValueError(f"method must be 'auto', 'lasso' or 'fista', got {method!r}")
        lasso_applies = self.beta == 0 and self.gamma == 0
        if method == "lasso" and not lasso_applies:
            raise ValueError("method='lasso' needs beta = gamma = 0; use 'fista' or 'auto'")
        device = _device(self.device)
        if method == "lasso" or (method == "auto" and lasso_applies):
            codes = _lasso(X, W, self.lam, self.positive, self.n_threads, device)[0]
            if device != "cpu":
                _exact_on_cpu_note(
                    device, f"VarSparseCoder(method={method!r}) chose the exact lasso solver, "
                    "which", "method='fista'", stacklevel=2)
            return codes
        return _fista(X, W, self.lam, beta=self.beta, threshold=self.threshold, gamma=self.gamma,
                      step=self.step, backtracking=self.backtracking, max_iter=self.max_iter,
                      tol=self.tol, signed=not self.positive, batch_size=self.batch_size,
                      n_threads=self.n_threads, device=device)[0]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags
