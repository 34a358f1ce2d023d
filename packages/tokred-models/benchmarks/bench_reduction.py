"""Forward+backward wall-clock of reduction policies against `none`, beside the cost model.

A thin front to `tokred_models.bench`, the engine of `tokred bench` (which also sweeps the
sequence length and writes bench.json and bench.png): for each policy, `none` and the
tokred, masking-only and renumbered-gather arms are timed interleaved on the same batch,
with the plan's training-FLOPs ratio, efficiency, memory and the probe's cost. Not a test:
timings depend on the machine, so they are measured here and written down with the
machine and the command.

    uv run --frozen python packages/tokred-models/benchmarks/bench_reduction.py --threads 1 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from tokred_core import TokredError
from tokred_models.bench import (
    BENCH_PRESETS,
    DEFAULT_POLICIES,
    load_bench_shape,
    parse_cases,
    render_table,
    run_bench,
)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--shape",
        default="compute-bound",
        help=f"a preset ({', '.join(BENCH_PRESETS)}) or a config.json (default compute-bound)",
    )
    parser.add_argument("--policies", default=DEFAULT_POLICIES)
    parser.add_argument("--batch", type=int, default=None, help="default: the shape's")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        if args.warmup < 0 or args.repeats < 1:
            raise TokredError(
                f"--warmup {args.warmup} / --repeats {args.repeats}: need >= 0 / >= 1"
            )
        shape = load_bench_shape(args.shape)
        if args.batch is not None:
            shape = shape.replace(batch=args.batch)
        cases = parse_cases(args.policies, shape)
        result = run_bench(
            shape, cases, args.device, args.warmup, args.repeats, seq_lens=(), command=sys.argv
        )
    except TokredError as exc:
        print(f"bench_reduction: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result.to_dict(), indent=1) if args.json else render_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
