#!/usr/bin/env python3
"""Times SPAMS (and, on the first problem, scikit-learn and a numpy FISTA) on varsparse's
batch-encoding problems, in one process, and prints one table per problem plus a summary.

Run through benches/compare/run.sh, which exports the problems with `varsparse bench --export`
and installs numpy, scikit-learn and spams-bin into a virtual environment.

    compare.py DIR [REPEATS] [--varsparse BIN] [--no-sklearn]

DIR holds one problem (W.npy, Y.npy, problem.json) or one sub-directory per problem. With
`--varsparse BIN`, the whole `BIN infer` process (start-up, reading Y.npy, solving, writing the
codes) is timed on each problem too, against SPAMS's in-process call. scikit-learn and the numpy
FISTA run on the first problem only (they are 100x slower); `--no-sklearn` skips them.

The problem: non-negative lasso, in varsparse's (the authors') scaling
    min_{z >= 0} (1/d) ||y - W z||^2 + lambda ||z||_1
Each peer's own parameter is mapped to that objective (SPAMS: lambda1 = d lambda / 2 on
1/2||.||^2; scikit-learn: alpha = lambda / 2 on (1/(2d))||.||^2), and every result is scored by the
same objective.

SPAMS is called in its fastest form: `spams.lasso(X, D=D, lambda1=..., mode=2, pos=True,
numThreads=2)`, letting it compute its own Gram matrix (passing Q = D^T D and q = D^T X computed in
numpy is slower); both float32 and float64 inputs are timed and the faster is reported.
"""
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

warnings.filterwarnings("ignore")  # scikit-learn's ConvergenceWarning, once per sample

args = [a for a in sys.argv[1:]]
with_sklearn = "--no-sklearn" not in args
args = [a for a in args if a != "--no-sklearn"]
binary = None
if "--varsparse" in args:
    i = args.index("--varsparse")
    binary = args[i + 1]
    del args[i : i + 2]
root = args[0]
repeats = int(args[1]) if len(args) > 1 else 3

if os.path.exists(os.path.join(root, "problem.json")):
    dirs = [root]
else:
    dirs = sorted(
        os.path.join(root, e) for e in os.listdir(root) if os.path.exists(os.path.join(root, e, "problem.json"))
    )
if not dirs:
    sys.exit(f"no problem.json in {root} or its sub-directories")

try:
    import spams
except Exception as e:  # noqa: BLE001
    spams = None
    print(f"SPAMS unavailable: {e}", file=sys.stderr)


def timed(f, repeats=repeats):
    ts, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = f()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts)), out


summary = []
for k, pdir in enumerate(dirs):
    W = np.load(os.path.join(pdir, "W.npy")).astype(np.float32)  # (d, l)
    Y = np.load(os.path.join(pdir, "Y.npy")).astype(np.float32)  # (n, d)
    meta = json.load(open(os.path.join(pdir, "problem.json")))
    lam = meta["lambda"]
    label = meta.get("label", os.path.basename(pdir))
    n, d = Y.shape
    l = W.shape[1]
    ours = {r["path"]: r for r in meta["rows"]}
    exact = ours["active set (exact)"]
    opt = exact["mean_objective"]
    ours_sps = exact["samples_per_s"]
    Y64 = Y.astype(np.float64)
    W64 = W.astype(np.float64)

    def objective(Z):
        Z = Z.astype(np.float64)
        R = Y64 - Z @ W64.T
        return float(((R * R).sum(axis=1) / d + lam * np.abs(Z).sum(axis=1)).mean())

    rows = []

    def report(name, t, Z):
        obj = objective(Z)
        rows.append((name, t, n / t, obj, (obj - opt) / opt, float((Z == 0).mean())))
        return n / t

    spams_sps = None
    if spams is not None:
        best = None
        for dtype in (np.float32, np.float64):
            Xf = np.asfortranarray(Y.T.astype(dtype))
            Df = np.asfortranarray(W.astype(dtype))

            def run_spams():
                A = spams.lasso(Xf, D=Df, lambda1=d * lam / 2, mode=2, pos=True, numThreads=2)
                return np.asarray(A.todense()).T

            t, Z = timed(run_spams)
            name = f"SPAMS lasso(X, D=D, mode=2, pos, 2 threads, {np.dtype(dtype).name})"
            sps = report(name, t, Z)
            if best is None or sps > best:
                best = sps
        spams_sps = best

    if k == 0 and with_sklearn:
        from sklearn.decomposition import sparse_encode

        for algo in ["lasso_cd", "lasso_lars"]:
            # slow: timed once
            t, Z = timed(
                lambda: sparse_encode(Y, W.T, algorithm=algo, alpha=lam / 2, positive=True, n_jobs=1, max_iter=1000),
                1,
            )
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

    process_sps = None
    if binary is not None:
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "Z.npy")
            cmd = [
                binary, "--threads", "2", "infer", "--dictionary", os.path.join(pdir, "W.npy"),
                "--input", os.path.join(pdir, "Y.npy"), "--lambda", repr(lam), "--out", out,
            ]

            def run_process():
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                return np.load(out)

            t, Z = timed(run_process)
            process_sps = report("varsparse infer, whole process (start, read, solve, write)", t, Z)

    print(f"\n### {label}: n {n}, d {d}, l {l}, lambda {lam:.6e}")
    split = meta.get("split")
    if split:
        print(
            f"varsparse exact solver: {split['whole_s'] * 1e3:.1f} ms = W^T W {split['gram_s'] * 1e3:.2f} ms"
            f" + Y W {split['yw_s'] * 1e3:.1f} ms + solves {split['solves_s'] * 1e3:.1f} ms;"
            f" {100 * split['fraction_of_gemm_limit']:.0f}% of the GEMM-bound limit (Y W alone)"
        )
    print("| solver | median s | samples/s | varsparse exact / it | mean objective | rel. gap | sparsity |")
    print("|---|---|---|---|---|---|---|")
    for name, t, sps, obj, gap, sp in rows:
        print(f"| {name} | {t:.3f} | {sps:.0f} | {ours_sps / sps:.2f}x | {obj:.6f} | {gap:.1e} | {100 * sp:.1f}% |")
    for name, r in ours.items():
        print(
            f"| varsparse {name} | {r['seconds']:.3f} | {r['samples_per_s']:.0f} | {ours_sps / r['samples_per_s']:.2f}x"
            f" | {r['mean_objective']:.6f} | {r['rel_gap']:.1e} | {100 * r['sparsity']:.1f}% |"
        )
    summary.append((label, l, exact["sparsity"], ours_sps, spams_sps, process_sps))

print("\n### Summary: varsparse's exact solver against SPAMS's fastest call, same process, same run")
print("| problem | atoms | sparsity | varsparse samples/s | SPAMS samples/s | ratio | varsparse infer process samples/s | process / SPAMS |")
print("|---|---|---|---|---|---|---|---|")
for label, l, sp, ours_sps, spams_sps, process_sps in summary:
    ratio = f"{ours_sps / spams_sps:.2f}x" if spams_sps else "-"
    proc = f"{process_sps:.0f}" if process_sps else "-"
    pratio = f"{process_sps / spams_sps:.2f}x" if process_sps and spams_sps else "-"
    sps = f"{spams_sps:.0f}" if spams_sps else "-"
    print(f"| {label} | {l} | {100 * sp:.1f}% | {ours_sps:.0f} | {sps} | {ratio} | {proc} | {pratio} |")
