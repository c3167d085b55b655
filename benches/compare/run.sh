#!/usr/bin/env bash
# Side-by-side batch-encoding comparison: varsparse vs SPAMS, scikit-learn and numpy.
#   bash benches/compare/run.sh            (from the repository root; needs python3 with venv)
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=benches/compare/.venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q numpy scikit-learn spams-bin
fi
cargo build --release --quiet
out=$(mktemp -d)
./target/release/varsparse --threads 2 bench --repeats 5 --export "$out"
"$venv/bin/python" benches/compare/compare.py "$out" 5
