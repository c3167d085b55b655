#!/bin/bash
# GPU check for varsparse: the CUDA test suite, then the GPU benchmark, then a CLI training epoch.
set -o pipefail
nvidia-smi -L
L=/tmp/cudalibs; mkdir -p $L
for n in nvrtc cublas cublasLt nvrtc-builtins; do
  f=$(ls /usr/local/cuda/lib64/lib$n.so.* 2>/dev/null | head -1)
  [ -z "$f" ] && f=$(find /usr /opt -name "lib$n.so.*" 2>/dev/null | grep -v '\.alt' | head -1)
  echo "lib$n -> $f"
  if [ -n "$f" ]; then ln -sf "$f" $L/lib$n.so; export LD_LIBRARY_PATH=$(dirname "$f"):$LD_LIBRARY_PATH; fi
done
export LD_LIBRARY_PATH=$L:$LD_LIBRARY_PATH
VARSPARSE_REQUIRE_CUDA=1 .devbin/cuda_tests --test-threads=1 2>&1 | tee $OUT/tests.txt
.devbin/cuda_bench 2>&1 | tee $OUT/bench.txt
.devbin/varsparse train --preset mnist-vdl-nl --device cuda --epochs 2 --out /tmp/run 2>&1 | grep -E "epoch|done|error" | tee $OUT/cli.txt
