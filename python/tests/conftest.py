"""Shared fixtures: the repository's root, its MNIST, and the Rust command-line tool."""

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
MNIST_DIR = ROOT / "data" / "mnist"


def _find_cli():
    """The `varsparse` binary: $VARSPARSE_CLI (then it must exist), else a cargo build's."""
    env = os.environ.get("VARSPARSE_CLI")
    if env:
        if not Path(env).is_file():
            pytest.fail(f"VARSPARSE_CLI={env} does not exist")
        return env
    targets = [ROOT / "target"]
    if os.environ.get("CARGO_TARGET_DIR"):
        targets.insert(0, Path(os.environ["CARGO_TARGET_DIR"]))
    for t in targets:
        for profile in ("release", "debug"):
            p = t / profile / "varsparse"
            if p.is_file():
                return str(p)
    return shutil.which("varsparse")


@pytest.fixture(scope="session")
def cli():
    """A function running the CLI with arguments; skips when there is no binary (set
    VARSPARSE_CLI, as CI does, to make a missing binary a failure)."""
    path = _find_cli()
    if path is None:
        pytest.skip("no varsparse binary: cargo build --bin varsparse, or set VARSPARSE_CLI")

    def run(*args):
        r = subprocess.run([path, "--threads", "2", *map(str, args)], capture_output=True,
                           text=True)
        if r.returncode != 0:
            raise AssertionError(f"varsparse {' '.join(map(str, args))} failed:\n{r.stderr}")
        return r

    run.path = path
    return run


@pytest.fixture(scope="session")
def mnist():
    """MNIST (2,000 training images kept), normalised."""
    import varsparse

    return varsparse.load_mnist(MNIST_DIR, max_train=2000)


@pytest.fixture(scope="session")
def unit_dictionary(mnist):
    """A (784, 64) dictionary: 64 training images of a seeded draw, unit-norm columns (at
    LAM, about 85% of the test images' codes are zero, and signed codes have negative ones)."""
    X = mnist["train_images"]
    idx = np.random.default_rng(7).choice(X.shape[0], 64, replace=False)
    W = X[idx].T.copy()
    W /= np.linalg.norm(W, axis=0, keepdims=True)
    return W


LAM = 0.005
