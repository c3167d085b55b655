#!/usr/bin/env python3
"""Times SPAMS, scikit-learn and a numpy FISTA on varsparse's batch-encoding problem.

Run through benches/compare/run.sh, which builds the problem with `varsparse bench --export`
and installs numpy, scikit-learn and spams-bin into a virtual environment.

The problem: non-negative lasso, in varsparse's (the authors') scaling
    min_{z >= 0} (1/d) ||y - W z||^2 + lambda ||z||_1
for the 10,000 MNIST test images against 128 unit-norm atoms. Each peer's own parameter is
mapped to that objective (SPAMS: lambda1 = d lambda / 2 on 1/2||.||^2; scikit-learn:
alpha = lambda / 2 on (1/(2d))||.||^2), and every result is scored by the same objective.
"""
import json
import os
import sys
import time
import warnings

import numpy as np

warnings.filterwarnings("ignore")  # scikit-learn's ConvergenceWarning, once per sample

d_ir = sys.argv[1]
repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 3
W = np.load(os.path.join(d_ir, "W.npy")).astype(np.float32)  # (d, l)
Y = np.load(os.path.join(d_ir, "Y.npy")).astype(np.float32)  # (n, d)
meta = json.load(open(os.path.join(d_ir, "problem.json")))
lam = meta["lambda"]
n, d = Y.shape
l = W.shape[1]
ours = {r["path"]: r for r in meta["rows"]}
opt = ours["active set (exact)"]["mean_objective"]
ours_sps = ours["active set (exact)"]["samples_per_s"]


def objective(Z):
    Z = Z.astype(np.float64)
    R = Y.astype(np.float64) - Z @ W.T.astype(np.float64)
    return float(((R * R).sum(axis=1) / d + lam * np.abs(Z).sum(axis=1)).mean())


def timed(f, repeats=repeats):
    ts, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = f()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts)), out


rows = []


def report(name, t, Z):
    obj = objective(Z)
    rows.append((name, t, n / t, obj, (obj - opt) / opt, float((Z == 0).mean())))


try:
    import spams

    Xf = np.asfortranarray(Y.T.astype(np.float64))
    Df = np.asfortranarray(W.astype(np.float64))

    def run_spams():
        G = np.asfortranarray(Df.T @ Df)
        q = np.asfortranarray(Df.T @ Xf)
        A = spams.lasso(Xf, Q=G, q=q, lambda1=d * lam / 2, mode=2, pos=True, numThreads=2)
        return np.asarray(A.todense()).T

    t, Z = timed(run_spams)
    report("SPAMS lasso (LARS, Gram, pos, 2 threads, float64)", t, Z)
except Exception as e:  # noqa: BLE001
    print(f"SPAMS unavailable: {e}", file=sys.stderr)

from sklearn.decomposition import sparse_encode  # noqa: E402

for algo in ["lasso_cd", "lasso_lars"]:
    # slow: timed once
    t, Z = timed(lambda: sparse_encode(Y, W.T, algorithm=algo, alpha=lam / 2, positive=True, n_jobs=1, max_iter=1000), 1)
    report(f"scikit-learn sparse_encode {algo} (n_jobs=1)", t, Z)


def numpy_fista(iters=200):
    G = W.T @ W
    C = Y @ W
    L = 2.0 / d * np.linalg.eigvalsh(G.astype(np.float64)).max() * 1.02
    eta = np.float32(1.0 / L)
    thr = np.float32(lam * eta)
    two_d = np.float32(2.0 / d)
    Z = np.zeros((n, l), np.float32)
    X = Z.copy()
    t = 1.0
    grad = np.empty_like(Z)
    for _ in range(iters):
        np.matmul(X, G, out=grad)
        grad -= C
        grad *= two_d
        Znew = X - eta * grad
        Znew -= thr
        np.maximum(Znew, 0, out=Znew)
        tn = 0.5 * (1 + np.sqrt(1 + 4 * t * t))
        X = Znew + ((t - 1) / tn) * (Znew - Z)
        Z, t = Znew, tn
    return Z


t, Z = timed(numpy_fista)
report("numpy FISTA, 200 iterations, Gram, float32", t, Z)

print(f"problem: n {n}, d {d}, l {l}, lambda {lam:.6e}; varsparse active set: {ours_sps:.0f} samples/s")
print("| solver | median s | samples/s | varsparse active set / it | mean objective | rel. gap | sparsity |")
print("|---|---|---|---|---|---|---|")
for name, t, sps, obj, gap, sp in rows:
    print(f"| {name} | {t:.3f} | {sps:.0f} | {ours_sps / sps:.2f}x | {obj:.6f} | {gap:.1e} | {100 * sp:.1f}% |")
for name, r in ours.items():
    print(f"| varsparse {name} | {r['seconds']:.3f} | {r['samples_per_s']:.0f} | {ours_sps / r['samples_per_s']:.2f}x | {r['mean_objective']:.6f} | {r['rel_gap']:.1e} | {100 * r['sparsity']:.1f}% |")
