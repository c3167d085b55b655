"""varsparse: sparse coding with variance-regularised codes, from numpy, at Rust speed.

Functions (numpy in, numpy out):

- :func:`fista` and :func:`fista_mlp`: FISTA codes for a linear dictionary or a one-hidden-layer
  decoder, with every option of ``varsparse infer``; they return ``(codes, report)``.
- :func:`lasso`: the exact lasso (active-set solver), non-negative or signed.
- :func:`load`: a trained checkpoint (``varsparse train`` or :meth:`Model.save`) as a
  :class:`Model` with ``encode``, ``encode_fista``, ``decode``, ``atoms`` and ``save``.
- :func:`load_mnist`: the bundled MNIST, normalised as the paper does.

scikit-learn estimators (need scikit-learn): :class:`VarSparseDictionaryLearning` and
:class:`VarSparseCoder`, in :mod:`varsparse.sklearn` and re-exported here.

Arrays: samples are rows (``Y`` is ``(n, d)``, codes ``(n, l)``), a dictionary ``W`` is
``(d, l)`` with atoms as columns. Computation is float32: float32 arrays of any layout (C or
Fortran order, strided views) are read in place without copying; float64 (or any other real
dtype) is converted to float32 first, which costs a copy. The GIL is released during every
computation, which runs over ``n_threads`` CPU threads (default: all available); results do
not depend on the thread count.

Energy (docs/CONVENTIONS.md §1 in the repository), per sample:
``(1/d) ||y - D(z)||^2 + lam ||z||_1`` plus, with ``beta > 0``, the variance hinge
``beta sum_j relu(threshold - std_j(Z))^2`` over each batch and, with ``gamma > 0``, the
proximity term ``gamma (1/l) ||z - e||^2`` to the warm start ``e``.

Devices: every function and method that computes takes ``device="cpu"`` (default),
``"cuda"`` (the first GPU) or ``"cuda:N"``, the names of the command-line tool's ``--device``.
The GPU is reachable only from a wheel built with the ``cuda`` feature
(``maturin build --release --features cuda``, see the README; :data:`CUDA_BUILD` says whether
this one was); the default wheel is CPU-only. Where CUDA cannot compute (no ``cuda`` feature,
no driver or library, no such GPU) a CUDA device raises :class:`CudaUnavailableError`; a name
that is not a device raises :class:`ValueError`. On a GPU, ``n_threads`` still sizes the host's
share of the work.

Errors: a bad argument raises :class:`ValueError`, a failed file operation :class:`OSError`,
anything else :class:`VarSparseError` (of which :class:`CudaUnavailableError` is one), with
varsparse's message.
"""

from __future__ import annotations

import json as _json
import warnings as _warnings

import numpy as _np

from . import _native
from ._native import CUDA_BUILD, CudaUnavailableError, Model, VarSparseError

__all__ = [
    "fista",
    "fista_mlp",
    "lasso",
    "load",
    "load_mnist",
    "presets",
    "preset_params",
    "Model",
    "VarSparseError",
    "CudaUnavailableError",
    "CUDA_BUILD",
    "VarSparseDictionaryLearning",
    "VarSparseCoder",
]

__version__ = "0.1.0"


def _f32(a, name, ndim=2):
    """``a`` as a float32 array of ``ndim`` dimensions, without copying float32 input."""
    arr = _np.asarray(a)
    if arr.dtype != _np.float32:
        if not (_np.issubdtype(arr.dtype, _np.floating) or _np.issubdtype(arr.dtype, _np.integer)):
            raise ValueError(f"{name} must hold real numbers, got dtype {arr.dtype}")
        arr = arr.astype(_np.float32)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    return arr


def _opt_f32(a, name):
    return None if a is None else _f32(a, name)


def _device(device):
    """``device`` in the library's spelling (``"cpu"``, ``"cuda"``, ``"cuda:N"``): ValueError
    for a string that names no device, TypeError for anything but a string. Starts nothing."""
    if not isinstance(device, str):
        raise TypeError(f"device must be a string ('cpu', 'cuda' or 'cuda:N'), got {device!r}")
    return _native.parse_device(device)


def _infer_args(lam, beta, threshold, gamma, warm_start, step, backtracking, max_iter, tol,
                signed, batch_size, direct, adaptive_restart, n_threads):
    return (
        float(lam), float(beta), float(threshold), float(gamma),
        _opt_f32(warm_start, "warm_start"),
        None if step is None else float(step),
        bool(backtracking), int(max_iter), float(tol), bool(signed), int(batch_size),
        bool(direct), bool(adaptive_restart), None if n_threads is None else int(n_threads),
    )


def fista(Y, W, lam, *, beta=0.0, threshold=0.5, gamma=0.0, warm_start=None, step=None,
          backtracking=False, max_iter=200, tol=1e-3, signed=False, batch_size=250,
          direct=False, adaptive_restart=False, n_threads=None, device="cpu"):
    """FISTA codes of the rows of ``Y`` for the linear dictionary ``W``.

    The same computation, with the same options, as ``varsparse infer --dictionary W.npy``
    (identical bits).

    Parameters
    ----------
    Y : array (n, d)
        Samples, one per row.
    W : array (d, l)
        The dictionary, atoms as columns.
    lam : float
        Sparsity weight (the energy's ``lambda``).
    beta, threshold : float
        Variance hinge weight and threshold on each latent's standard deviation over a batch
        (``beta = 0``: no hinge).
    gamma : float
        Proximity weight to ``warm_start`` (zeros when absent).
    warm_start : array (n, l), optional
        Initial codes, also the proximity term's target.
    step : float, optional
        A constant step ``eta``. Default: ``1/L`` from a Lipschitz bound.
    backtracking : bool
        Backtracking line search (one ``L`` per batch) instead; not with ``step``.
    max_iter : int
        Maximum iterations per batch.
    tol : float
        Relative tolerance of the per-sample convergence test (0: run ``max_iter``).
    signed : bool
        Signed codes (soft thresholding) instead of non-negative ones.
    batch_size : int
        Rows per batch (the variance hinge is computed per batch).
    direct : bool
        Compute the gradient through the input space (no Gram matrix).
    adaptive_restart : bool
        Restart each sample's momentum when its step turns against it (a deviation from the
        authors' code: fewer iterations, other codes; needs a constant step, so not with
        ``backtracking``, nor without ``step`` in :func:`fista_mlp`).
    n_threads : int, optional
        CPU threads (default: all available).
    device : str
        Where to compute: ``"cpu"`` (default), ``"cuda"`` or ``"cuda:N"`` (as
        ``varsparse --device``). A CUDA device needs a wheel built with the ``cuda`` feature
        and a GPU, else :class:`CudaUnavailableError`; its codes agree with the CPU's to
        rounding, not bit for bit.

    Returns
    -------
    codes : float32 array (n, l)
    report : dict
        ``rows``, ``sparsity``, ``mean_energy``, ``mean_steps``, ``converged`` (every batch),
        ``params`` and ``batches`` (per batch: ``start``, ``end``, ``iterations``,
        ``mean_steps``, ``converged``, ``energy`` terms, ``total_energy``, ``backtracks``,
        ``step``, ``path``, ``restarts``).
    """
    codes, report = _native.fista(
        _f32(Y, "Y"), _f32(W, "W"),
        *_infer_args(lam, beta, threshold, gamma, warm_start, step, backtracking, max_iter, tol,
                     signed, batch_size, direct, adaptive_restart, n_threads), _device(device))
    return codes, _json.loads(report)


def fista_mlp(Y, W1, b1, W2, lam, *, beta=0.0, threshold=0.5, gamma=0.0, warm_start=None,
              step=None, backtracking=False, max_iter=200, tol=1e-3, signed=False,
              batch_size=250, direct=False, adaptive_restart=False, n_threads=None,
              device="cpu"):
    """FISTA codes of the rows of ``Y`` for the decoder ``W2 relu(W1 z + b1)``.

    The same computation as ``varsparse infer --mlp W1.npy,b1.npy,W2.npy`` (identical bits).
    ``W1`` is ``(m, l)``, ``b1`` ``(m,)`` (``(1, m)`` and ``(m, 1)`` are accepted), ``W2``
    ``(d, m)``. Without ``step``, FISTA backtracks (there is no Lipschitz bound). Every other
    argument (``device`` included), and the result, as in :func:`fista`.
    """
    b1 = _np.asarray(b1)
    if b1.ndim == 2 and 1 in b1.shape:
        b1 = b1.reshape(-1)
    codes, report = _native.fista_mlp(
        _f32(Y, "Y"), _f32(W1, "W1"), _f32(b1, "b1", ndim=1), _f32(W2, "W2"),
        *_infer_args(lam, beta, threshold, gamma, warm_start, step, backtracking, max_iter, tol,
                     signed, batch_size, direct, adaptive_restart, n_threads), _device(device))
    return codes, _json.loads(report)


def _lasso(Y, W, lam, positive, n_threads, device):
    """:func:`lasso` without its note; ``device`` already parsed."""
    codes, report = _native.lasso(_f32(Y, "Y"), _f32(W, "W"), float(lam), bool(positive),
                                  None if n_threads is None else int(n_threads), device)
    return codes, _json.loads(report)


def _exact_on_cpu_note(device, where, fista, stacklevel):
    """The CLI's note for ``infer --solver exact --device cuda``, as a UserWarning."""
    _warnings.warn(
        f"{where} runs on the CPU (a host algorithm); device={device!r} applies to FISTA "
        f"({fista})", UserWarning, stacklevel=stacklevel + 1)


def lasso(Y, W, lam, positive=True, *, n_threads=None, device="cpu"):
    """Exact lasso codes of the rows of ``Y`` for the dictionary ``W`` (active-set solver).

    Solves, per sample, ``min_z (1/d) ||y - W z||^2 + lam ||z||_1`` with ``z >= 0`` when
    ``positive`` (the paper's codes) and signed codes otherwise, to rounding (no tolerance).
    In scikit-learn's scaling this is ``alpha = lam / 2``; in SPAMS's, ``lambda1 = d lam / 2``.

    Parameters
    ----------
    Y : array (n, d)
    W : array (d, l), atoms as columns
    lam : float, >= 0
    positive : bool
    n_threads : int, optional
        CPU threads (default: all available); the codes do not depend on it.
    device : str
        ``"cpu"`` (default), ``"cuda"`` or ``"cuda:N"``. The exact solver is a host algorithm:
        as ``varsparse infer --solver exact --device cuda`` does, a CUDA device must be
        available (else :class:`CudaUnavailableError`), the codes are computed on the CPU
        (the same bits as ``device="cpu"``) and a :class:`UserWarning` says so. Use
        :func:`fista` to compute on a GPU.

    Returns
    -------
    codes : float32 array (n, l)
    report : dict
        ``n``, ``mean_objective``, ``mean_support``, ``sparsity``, ``iterations`` and
        ``max_kkt_violation`` (relative).
    """
    device = _device(device)
    out = _lasso(Y, W, lam, positive, n_threads, device)
    if device != "cpu":
        _exact_on_cpu_note(device, "varsparse.lasso, the exact lasso solver,", "varsparse.fista",
                           stacklevel=2)
    return out


def load(path):
    """Loads a checkpoint directory (``varsparse train``'s ``best/`` or ``latest/``, or one
    written by :meth:`Model.save`) as a :class:`Model`.

    Raises :class:`OSError` when a file cannot be read and :class:`VarSparseError` for a
    corrupt or inconsistent checkpoint.
    """
    return _native.load(str(path))


def load_mnist(data_dir, split_seed=0, max_train=None):
    """MNIST from ``data_dir`` (the four IDX files, gzipped or not), normalised as the paper
    does (``(p/255 - 0.1307)/0.3081``, float32, 784 pixels per row).

    The training file is split into 55,000 training and 5,000 validation images with the seed
    ``split_seed``; ``max_train`` keeps the first training images only. Returns a dict with
    ``train_images``, ``train_labels``, ``val_images``, ``val_labels``, ``test_images``,
    ``test_labels`` and ``image_shape``.
    """
    return _native.load_mnist(str(data_dir), int(split_seed),
                              None if max_train is None else int(max_train))


def presets():
    """The names of the paper's eight presets (``"mnist-vdl"``, ...)."""
    return list(_native.preset_names())


def preset_params(name):
    """A preset's hyper-parameters as a dict (the library's ``ModelParams``)."""
    return _json.loads(_native.preset_params(name))


def __getattr__(name):
    # The estimators need scikit-learn, which the functions do not: import it on first use.
    if name in ("VarSparseDictionaryLearning", "VarSparseCoder"):
        from . import sklearn as _sk

        return getattr(_sk, name)
    raise AttributeError(f"module 'varsparse' has no attribute {name!r}")
