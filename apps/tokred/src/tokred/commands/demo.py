"""`tokred demo`: the embedded default end to end, in a few minutes on a laptop CPU.

1. Builds the embedded shapes data (one or two shapes per image; validation scenes are
   held out, never drawn in training), fits the patch VQ tokenizer and the unified
   vocabulary (deterministic: both runs get the very same ones).
2. Trains the tiny unified model twice from the same seed: without reduction (baseline),
   and with HiMix for understanding + HMGen for generation (separate image projections
   per task, the paper's "share partial").
3. Evaluates both on the held-out split (scenes never seen in training): understanding
   exact match per question type and generation checked by the shapes detector, each
   against its chance level; the reduced run is evaluated under its own reduction.
4. Runs the attention-allocation probe (the paper's Figure 3) on both, prices both runs'
   plans with the cost model on the real training layouts, and compares measured step
   times.
5. Writes into --out (default ./tokred-demo): report.md, metrics.json, the allocation
   figures, the sample grids, and the two run folders (runs/baseline, runs/reduced), which
   `tokred eval` and `tokred analyze` can read again, and lists them in .tokred-demo.

--out must be absent, empty or an earlier demo's folder: a rerun there replaces only the
files the earlier demo listed, and refuses (before training) a file of anyone else in
the way. A non-empty folder holding no demo is refused unless --force. Either way the
demo never removes or overwrites a file it did not write.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..arg_types import count
from ..recipes import demo_steps
from . import Command, add_set_option

__all__ = ["COMMAND"]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        default="tokred-demo",
        metavar="DIR",
        help="default ./tokred-demo; absent, empty or an earlier demo's (a rerun replaces "
        "only the files that demo wrote)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="also write into a non-empty --out that holds no earlier demo; its files are "
        "never removed or overwritten (one in the demo's way is refused by name)",
    )
    steps = demo_steps()
    parser.add_argument(
        "--steps",
        type=count(1),
        default=steps,
        metavar="N",
        help=f"training steps per run (default {steps})",
    )
    parser.add_argument(
        "--threads",
        type=count(0),
        default=0,
        metavar="N",
        help="torch CPU threads (default 0: all cores when the machine is idle, 1 when it is busy)",
    )
    parser.add_argument(
        "--eval-understanding",
        type=count(0),
        default=None,
        metavar="N",
        help="questions to score per run (default: the whole validation split)",
    )
    parser.add_argument(
        "--eval-generation",
        type=count(0),
        default=None,
        metavar="N",
        help="captions to draw per run (default: the whole validation split)",
    )
    parser.add_argument(
        "--probe-samples",
        type=count(1),
        default=32,
        metavar="N",
        help="samples per task for the allocation probe",
    )
    add_set_option(
        parser, "override the embedded default for both runs, e.g. optim.lr=1e-3 (repeatable)"
    )


def run(args: argparse.Namespace) -> int:
    from ..demo_run import run_demo
    from ..report import render_summary

    metrics = run_demo(
        Path(args.out),
        steps=args.steps,
        threads=args.threads,
        eval_understanding=args.eval_understanding,
        eval_generation=args.eval_generation,
        probe_samples=args.probe_samples,
        overrides=args.overrides,
        force=args.force,
    )
    print(render_summary(metrics))
    return 0


COMMAND = Command(
    name="demo",
    help="train, evaluate and diagnose the embedded tiny model with and without reduction",
    description=__doc__,
    configure=configure,
    run=run,
)
