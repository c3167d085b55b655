"""Why a one-hidden-layer VDL model's FISTA loop stalls: the evidence behind docs/RESULTS.md's
"VDL-NL's late stall".

Runs the released code's FISTA (docs/CONVENTIONS.md section 2: constant step, per-sample flags,
the loop ends when every sample is flagged at once) in float64 numpy on training batches of a
checkpoint, and for each batch reports its loop iterations, its samples' local curvature
``(2/d) ||W2 diag(relu'(a)) W1[:, support]||^2 + 2 gamma / l`` at the end against ``1/eta``,
and, for a sample that never settles, what its last iterations do: the size of its update, the
cosine between successive updates (-1: a 2-cycle), how many hidden units change sides, and how
many of its codes enter or leave the support.

    python python/examples/vdl_nl_stall.py runs/mnist-vdl-nl/latest --batches 6

Needs the binding (``pip install ./python``) and the bundled MNIST (``--data-dir``).
"""

import argparse
import json

import numpy as np
import varsparse


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--batches", type=int, default=6)
    ap.add_argument("--data-dir", default="data/mnist")
    ap.add_argument("--max-iter", type=int, default=200)
    args = ap.parse_args()

    model = varsparse.load(args.checkpoint)
    hp = json.loads(model.params_json)
    e = hp["energy"]
    lam, beta, T, gam, eta = e["lambda"], e["beta"], e["threshold"], e["gamma"], hp["eta"]
    p = model.decoder_params()
    W1 = p["W1"].astype(np.float64)
    b1 = p["b1"].astype(np.float64).reshape(-1)
    W2 = p["W2"].astype(np.float64)
    d, l = W2.shape[0], W1.shape[1]
    n = hp["batch_size"]
    data = varsparse.load_mnist(args.data_dir, max_train=args.batches * n)
    images = data["train_images"]
    warm = model.encode(images).astype(np.float64)
    images = images.astype(np.float64)

    def grad(X, Y, E):
        A = X @ W1.T + b1
        R = (2 / d) * (np.maximum(A, 0) @ W2.T - Y)
        g = ((R @ W2) * (A > 0)) @ W1 + (2 * gam / l) * (X - E)
        mu, s = X.mean(0), X.std(0, ddof=1)
        on = (s > 0) & (s < T)
        coef = np.where(on, -(2 * beta / (len(X) - 1)) * (T - s) / np.where(s > 0, s, 1), 0)
        return g + coef * (X - mu)

    def fista(Y, E):
        z, x, t = E.copy(), E.copy(), 1.0
        flag = np.zeros(len(Y), bool)
        history = [z.copy()]
        for k in range(args.max_iter):
            a = (~flag)[:, None]
            zn = np.maximum(x - a * eta * grad(x, Y, E) - a * lam * eta, 0)
            tn = (1 + np.sqrt(1 + 4 * t * t)) / 2
            x = zn + ((t - 1) / tn) * (zn - z)
            nz = np.linalg.norm(z, axis=1)
            rel = np.linalg.norm(z - zn, axis=1) / np.where(nz > 0, nz, np.inf)
            flag = (nz > 0) & (rel < 1e-3)
            z, t = zn, tn
            history.append(z.copy())
            if flag.all():
                break
        return z, k + 1, np.array(history)

    def curvature(z):
        S = z > 0
        if not S.any():
            return 2 * gam / l
        J = (W2 * ((W1 @ z + b1) > 0)) @ W1[:, S]
        return (2 / d) * np.linalg.norm(J, 2) ** 2 + 2 * gam / l

    print(f"{args.checkpoint}: eta {eta}, 1/eta {1 / eta:.3f}")
    for b in range(args.batches):
        Y, E = images[b * n:(b + 1) * n], warm[b * n:(b + 1) * n]
        z, iters, hist = fista(Y, E)
        L = np.array([curvature(zi) for zi in z])
        line = (f"batch {b}: {iters} iterations; local curvature median {np.median(L):.3f} "
                f"max {L.max():.3f}, {np.sum(L > 1 / eta)} samples above 1/eta")
        print(line)
        if iters < args.max_iter:
            continue
        steps = np.linalg.norm(np.diff(hist, axis=0), axis=2)  # (iters, n)
        rel = steps[-1] / np.linalg.norm(hist[-2], axis=1)
        for i in np.argsort(-rel)[:3]:
            if rel[i] < 1e-3:
                break
            u, v = hist[-1, i] - hist[-2, i], hist[-2, i] - hist[-3, i]
            cos = u @ v / (np.linalg.norm(u) * np.linalg.norm(v))
            a1, a0 = W1 @ hist[-1, i] + b1, W1 @ hist[-2, i] + b1
            flips = int(np.sum((a1 > 0) != (a0 > 0)))
            support = int(np.sum((hist[-1, i] > 0) != (hist[-2, i] > 0)))
            print(f"  sample {i}: last update {steps[-1, i]:.2e} (relative {rel[i]:.2e}), "
                  f"cosine with the one before {cos:+.3f}, hidden units changing side {flips}, "
                  f"support changes {support}, local curvature {L[i]:.3f}")


if __name__ == "__main__":
    main()
