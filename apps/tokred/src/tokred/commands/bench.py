"""`tokred bench`: do the FLOPs a plan saves become time saved, and how does tokred's
execution compare with the usual alternatives?

On one batch per policy (understanding for himix and fastv, generation for hmgen, half
of each for himix+hmgen), times forward + backward of a random-weight Llama decoder of
the chosen shape, interleaved round by round:

    none               the plain Hugging Face model
    tokred             apply_reduction + tokred_layout
    masking-only       the plain model under a 4D mask hiding the removed keys (FastV's
                       training path, VoCo-LLaMA): nothing saved
    renumbered-gather  ACTIVE tokens gathered and renumbered per run of layers, the
                       decoder layers run on them (PyramidDrop's training code)

and prints each arm's median time (IQR), its ratio to none, the cost model's training
FLOPs ratio of the plan, efficiency = (1 - time ratio) / (1 - FLOPs ratio), the memory
ratio and tokens/s; then the attention-allocation probe's cost, and efficiency against
sequence length (the image-token count swept). Writes bench.json and bench.png (the
sweep's plot) into --out. Timings depend on the machine and its load: bench.json records
both with the command line.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..arg_types import count, out_folder
from . import Command

__all__ = ["COMMAND"]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--shape",
        metavar="PRESET|CONFIG.JSON",
        help="a preset (compute-bound, demo, llama-1b) or a Hugging Face config.json, "
        "optionally with text_tokens, image_tokens, batch and seq_lens keys (default: demo "
        "on the CPU, llama-1b on CUDA)",
    )
    parser.add_argument(
        "--policies",
        metavar="LIST",
        help="comma-separated; A+B runs A for understanding and B for generation on a mixed "
        "batch; options as in --policy, e.g. fastv:keep_ratio=0.25 (default: "
        "himix,hmgen,himix+hmgen,fastv)",
    )
    parser.add_argument(
        "--batch", type=count(1, 4096), metavar="N", help="samples per batch (default: the shape's)"
    )
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="default cpu (float32); cuda runs bfloat16",
    )
    parser.add_argument(
        "--repeats", type=count(1, 1000), default=5, metavar="N", help="timed rounds (default 5)"
    )
    parser.add_argument(
        "--warmup",
        type=count(0, 1000),
        default=1,
        metavar="N",
        help="untimed rounds first (default 1)",
    )
    parser.add_argument(
        "--seq-lens",
        metavar="N,N,...",
        help="tokens per sample of the efficiency sweep, each above the shape's text tokens "
        "(the image tokens make up the rest); '' for none (default: the shape's)",
    )
    parser.add_argument(
        "--threads",
        type=count(0, 1024),
        default=0,
        metavar="N",
        help="torch CPU threads (default 0: leave torch's setting)",
    )
    parser.add_argument(
        "--out",
        type=out_folder,
        default="tokred-bench",
        metavar="DIR",
        help="where bench.json and bench.png go (default ./tokred-bench)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the result as JSON instead of the table"
    )


def run(args: argparse.Namespace) -> int:
    from ..bench_run import BenchRequest, parse_seq_lens, run_command

    request = BenchRequest(
        shape=args.shape,
        policies=args.policies,
        batch=args.batch,
        device=args.device,
        warmup=args.warmup,
        repeats=args.repeats,
        seq_lens=parse_seq_lens(args.seq_lens),
        threads=args.threads,
    )
    return run_command(request, Path(args.out), args.json)


COMMAND = Command(
    name="bench",
    help="time reduction plans executed by tokred, by masking and by gathering, against the cost model",
    description=__doc__,
    configure=configure,
    run=run,
)
