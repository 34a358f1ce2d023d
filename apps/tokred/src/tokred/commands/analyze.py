"""`tokred analyze`: where does attention go, layer by layer? (PAPER.md section 1, Figure 3)

Runs the attention-allocation probe over held-out samples of both tasks and writes

    allocation.json                          shares per layer per key segment per task,
                                             shares split by query segment, summaries
    allocation_understanding_generation.png  stacked shares per layer, both tasks
    allocation_pies.png                      first/last layer pies, with the paper's

SOURCE is a run folder of `tokred train` (its model, vocabulary and VQ tokenizer are
loaded back; the model keeps the run's reduction unless --policy says otherwise), or a
local Hugging Face model folder (config.json + weights; with the embedded vocab.json and
vq/ beside them, or a family whose image tokenizer tokred knows). --tiny analyzes an
untrained embedded tiny model on the embedded shapes data instead.
"""

from __future__ import annotations

import argparse

from ..arg_types import count, out_folder
from . import Command, add_set_option

__all__ = ["COMMAND"]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source", nargs="?", metavar="RUN_DIR_OR_MODEL", help="a run folder or a local model folder"
    )
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="analyze an untrained embedded tiny model on the embedded shapes data",
    )
    parser.add_argument(
        "--out",
        type=out_folder,
        metavar="DIR",
        help="output folder (default: RUN_DIR/analysis, else ./tokred-analysis)",
    )
    parser.add_argument(
        "--samples",
        type=count(1),
        default=32,
        metavar="N",
        help="validation samples per task (default 32)",
    )
    parser.add_argument("--batch-size", type=count(1), default=16, metavar="B", help="default 16")
    parser.add_argument(
        "--policy",
        default="run",
        metavar="SPEC",
        help="run (the model's own reduction, default), none (full attention), a policy name, "
        "or TASK=NAME[,TASK=NAME]; options as NAME:key=value, e.g. generation=hmgen:num_shallow=1",
    )
    add_set_option(parser, "--tiny: a config override, e.g. model.num_layers=6 (repeatable)")


def run(args: argparse.Namespace) -> int:
    from ..analysis import analyze, summary_lines

    alloc = analyze(
        args.source,
        tiny=args.tiny,
        out=args.out,
        samples=args.samples,
        batch_size=args.batch_size,
        policy=args.policy,
        overrides=args.overrides,
    )
    print("\n".join(summary_lines(alloc)))
    return 0


COMMAND = Command(
    name="analyze",
    help="attention allocation per layer and key segment (the paper's Figure 3)",
    description=__doc__,
    configure=configure,
    run=run,
)
