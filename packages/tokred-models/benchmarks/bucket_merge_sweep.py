"""The attention buckets' merge bound (bucketed_attention.BUCKET_CALL_MACS) swept side by
side: the bench's `measure_case` for one policy at each bound in turn, for several rounds
in one process, printing tokred's step over the plain model's.

    python packages/tokred-models/benchmarks/bucket_merge_sweep.py \
        [--shape llama-1b] [--device cuda] [--policy himix+hmgen] [--exponents 28,31,34]

This is how the CUDA bound (2^31) was set, on an H200 (docs/gpu-check-h200.md, run 4).
"""

from __future__ import annotations

import argparse
import copy

import tokred_models.bucketed_attention as bucketed
import torch
from tokred_models.bench.cases import parse_cases
from tokred_models.bench.measure import measure_case
from tokred_models.bench.shapes import load_bench_shape


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="llama-1b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--policy", default="himix+hmgen")
    parser.add_argument("--exponents", default="28,31,34")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    shape = load_bench_shape(args.shape)
    device = torch.device(args.device)
    with torch.device(device):
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        plain = shape.build_model().to(dtype=dtype)
    patched = copy.deepcopy(plain)
    (case,) = parse_cases(args.policy, shape)
    for round_ in range(args.rounds):
        for exponent in (int(e) for e in args.exponents.split(",")):
            # Read when each step's buckets are built, so a new bound applies at once.
            bucketed.BUCKET_CALL_MACS[device.type] = 2**exponent
            result = measure_case(case, shape, plain, patched, device, 1, args.repeats)
            tokred = result.arm("tokred")
            print(
                f"round {round_} bound 2^{exponent}: none {result.none.time.median * 1e3:.1f} ms, "
                f"tokred {tokred.time.median * 1e3:.1f} ms, ratio {tokred.time_ratio.median:.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
