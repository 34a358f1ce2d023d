#!/usr/bin/env bash
# The GPU check: every GPU-marked test, then `tokred bench` on CUDA at a 1B-class Llama
# shape. Run from the repository root on a machine with one CUDA GPU:
#
#   bash packages/tokred-models/benchmarks/gpu_check.sh [OUT_DIR]
#
# About 8 minutes on one H100/H200 class GPU (installation not counted). What it writes
# under OUT_DIR (default ./gpu-check): pytest.log, bench.json, bench.png, bench.txt and
# machine.txt; copy the table and the machine into the package README.
#
# GPU machines often come with their own PyTorch and no route to a package registry, so
# `uv sync` (which would fetch the locked CUDA torch) is not always possible. With
# TOKRED_PYTHON set (e.g. TOKRED_PYTHON=python3), that interpreter runs the workspace's
# sources straight from their src folders instead; it must already hold torch,
# transformers, peft, datasets, pytest and matplotlib (machine.txt records its versions).
set -euo pipefail
cd "$(dirname "$0")/../../.."
out="${1:-gpu-check}"
mkdir -p "$out"
if [ -n "${TOKRED_PYTHON:-}" ]; then
    py=("$TOKRED_PYTHON")
    src=""
    for d in packages/tokred-core packages/tokred-kernels packages/tokred-models \
        packages/tokred-train apps/tokred; do
        src="$src:$PWD/$d/src"
    done
    export PYTHONPATH="${src#:}${PYTHONPATH:+:$PYTHONPATH}"
else
    uv sync --all-packages --quiet
    py=(uv run python)
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/machine.txt"
"${py[@]}" -c "import sys, torch, transformers; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__)" | tee -a "$out/machine.txt"
# GPU tests: the kernels' backends (flash, flex) and the reduced model on CUDA.
timeout 240 "${py[@]}" -m pytest -q -m gpu -p no:cacheprovider \
    packages/tokred-kernels/tests packages/tokred-models/tests 2>&1 | tee "$out/pytest.log" || true
# The benchmark: forward+backward of each policy against none, interleaved, at llama-1b.
timeout 300 "${py[@]}" -m tokred.cli bench --device cuda --shape llama-1b --out "$out" 2>&1 | tee "$out/bench.txt"
