#!/usr/bin/env python3
"""varsparse's Python functions against scikit-learn and SPAMS, in one Python process.

    python benches/python_bench.py [--repeats 5] [--threads 2] [--problem DIR]

The problem (as `varsparse bench`'s): the non-negative lasso, in varsparse's scaling

    min_{z >= 0} (1/d) ||y - W z||^2 + lambda ||z||_1

for the 10,000 MNIST test images against 128 unit-norm atoms (normalised training images of a
seeded draw), with lambda set by bisection so that about 89% of the codes are zero. With
`--problem DIR` the problem is read from `varsparse bench --export DIR` instead (W.npy, Y.npy,
problem.json). Each peer's parameter is mapped to that objective (docs/CONVENTIONS.md §1:
SPAMS's lambda1 = d lambda / 2 on 1/2 ||.||^2; scikit-learn's alpha = lambda / 2 on
(1/(2d)) ||.||^2), every result is scored by the same objective in float64, and the codes are
compared with varsparse's exact ones.

Needs numpy, scikit-learn, the installed varsparse package and (optionally) spams-bin.
"""

import argparse
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

import varsparse

ROOT = Path(__file__).resolve().parents[1]


def build_problem(seed=0, target_sparsity=0.89):
    m = varsparse.load_mnist(ROOT / "data" / "mnist")
    Y = m["test_images"]  # (10000, 784), float32
    X = m["train_images"]
    idx = np.random.default_rng(seed).choice(X.shape[0], 128, replace=False)
    W = X[idx].T.astype(np.float64)
    W /= np.linalg.norm(W, axis=0, keepdims=True)
    W = np.ascontiguousarray(W, dtype=np.float32)  # (784, 128)
    lo, hi = np.log(1e-4), np.log(1.0)
    for _ in range(20):
        mid = 0.5 * (lo + hi)
        z, _ = varsparse.lasso(Y[:1000], W, float(np.exp(mid)))
        if (z == 0).mean() < target_sparsity:
            lo = mid
        else:
            hi = mid
    return W, Y, float(np.exp(0.5 * (lo + hi)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--problem", help="a `varsparse bench --export` directory")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")  # scikit-learn's ConvergenceWarning

    if args.problem:
        W = np.load(os.path.join(args.problem, "W.npy")).astype(np.float32)
        Y = np.load(os.path.join(args.problem, "Y.npy")).astype(np.float32)
        lam = json.load(open(os.path.join(args.problem, "problem.json")))["lambda"]
    else:
        W, Y, lam = build_problem()
    n, d = Y.shape
    l = W.shape[1]
    Y64, W64 = Y.astype(np.float64), W.astype(np.float64)

    def objective(Z):
        R = Y64 - Z.astype(np.float64) @ W64.T
        return float(((R * R).sum(axis=1) / d + lam * np.abs(Z).sum(axis=1)).mean())

    def timed(f, repeats):
        ts, out = [], None
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = f()
            ts.append(time.perf_counter() - t0)
        return float(np.median(ts)), out

    # the reference: varsparse's exact solver
    t_exact, (Z_exact, rep) = timed(
        lambda: varsparse.lasso(Y, W, lam, n_threads=args.threads), args.repeats)
    opt = objective(Z_exact)
    support = Z_exact > 0
    rows = []

    def add(name, t, Z):
        obj = objective(Z)
        agree = float(np.mean((Z > 0) == support))
        rows.append((name, t, n / t, obj, (obj - opt) / opt, float(np.mean(Z == 0)),
                     float(np.max(np.abs(Z - Z_exact))), agree))

    add(f"varsparse.lasso (exact, {args.threads} threads)", t_exact, Z_exact)
    for tol, iters in ((1e-3, 200), (0.0, 200)):
        t, (Z, _) = timed(lambda: varsparse.fista(Y, W, lam, tol=tol, max_iter=iters,
                                                 n_threads=args.threads), args.repeats)
        add(f"varsparse.fista (tol {tol:g}, max {iters} iterations, {args.threads} threads)",
            t, Z)

    try:
        import spams

        Xf = np.asfortranarray(Y64.T)
        Df = np.asfortranarray(W64)

        def run_spams():
            A = spams.lasso(Xf, D=Df, lambda1=d * lam / 2, mode=2, pos=True,
                            numThreads=args.threads)
            return np.asarray(A.todense()).T

        t, Z = timed(run_spams, args.repeats)
        add(f"SPAMS lasso(X, D=D, mode=2, pos=True, numThreads={args.threads}), float64", t, Z)
    except ImportError as e:
        print(f"SPAMS unavailable: {e}", file=sys.stderr)

    from sklearn.decomposition import sparse_encode

    t, Z = timed(lambda: sparse_encode(Y, W.T, algorithm="lasso_cd", alpha=lam / 2,
                                       positive=True, n_jobs=1, max_iter=1000), 1)
    add("scikit-learn sparse_encode lasso_cd (n_jobs=1)", t, Z)

    print(f"problem: n {n}, d {d}, l {l}, lambda {lam:.6e} (varsparse scaling); "
          f"exact: {100 * rep['sparsity']:.1f}% zeros, mean support {rep['mean_support']:.1f}")
    print(f"python {platform.python_version()}, numpy {np.__version__}, "
          f"{os.cpu_count()} CPUs, median of {args.repeats} runs (scikit-learn: 1 run)")
    print("| solver | median s | samples/s | vs varsparse.lasso | mean objective | rel. gap "
          "| zeros | max abs diff to exact | same support |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, t, sps, obj, gap, zeros, diff, agree in rows:
        print(f"| {name} | {t:.3f} | {sps:,.0f} | {n / t_exact / sps:.2f}x slower | {obj:.6f} "
              f"| {gap:.1e} | {100 * zeros:.1f}% | {diff:.2e} | {100 * agree:.2f}% |")


if __name__ == "__main__":
    main()
