#!/usr/bin/env bash
# The GPU check: every GPU-marked test, then `tokred bench` on CUDA at a 1B-class Llama
# shape. Run from the repository root on a machine with one CUDA GPU:
#
#   bash packages/tokred-models/benchmarks/gpu_check.sh [OUT_DIR]
#
# About 8 minutes on one H100/H200 class GPU (installation not counted). What it writes
# under OUT_DIR (default ./gpu-check): pytest.log, bench.json, bench.png, bench.txt and
# machine.txt; copy the table and the machine into the package README.
set -euo pipefail
cd "$(dirname "$0")/../../.."
out="${1:-gpu-check}"
mkdir -p "$out"
uv sync --all-packages --quiet
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/machine.txt"
uv run python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$out/machine.txt"
# GPU tests: the kernels' backends (flash, flex) and the reduced model on CUDA.
timeout 240 uv run pytest -q -m gpu -p no:cacheprovider \
    packages/tokred-kernels/tests packages/tokred-models/tests 2>&1 | tee "$out/pytest.log" || true
# The benchmark: forward+backward of each policy against none, interleaved, at llama-1b.
timeout 300 uv run tokred bench --device cuda --shape llama-1b --out "$out" 2>&1 | tee "$out/bench.txt"
