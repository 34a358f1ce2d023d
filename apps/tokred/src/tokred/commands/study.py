"""`tokred study [CONFIG]`: does acceleration keep the synergy of joint training?

Trains every arm of the study at every seed: the baseline (isolated understanding,
isolated generation, unified) and, per acceleration, its unified and isolated runs; an
isolated run sees exactly the unified run's samples of its task (--budget matched).
Writes OUT/report.md, OUT/study.json (every number of the report: per-seed scores, means
and 95% intervals, synergy and synergy kept, FLOPs and step-time ratios) and
OUT/figures/. Rerunning the same command finishes an interrupted study and reuses every
complete run. An arm may add training strategies after `#` (full steps, distillation,
PCGrad, gating: the `strategy` section), and `--arms synergy` runs one arm per strategy;
the report then says whether any keeps 90% of the synergy at 0.6x the FLOPs with a faster
step. CONFIG is any config `tokred train` takes (default: the shipped `study`
benchmark; `study-image-rich` is the same with 144-token images, where image-token
reduction can reach 0.6x the FLOPs). Generation is scored by the shapes detector, else
by the validation image-token loss, or, with --fid-weights FILE (your local copy of the
standard FID network inception-2015-12-05.pt; nothing is downloaded), by FID against the
validation images; the report says which.
"""

from __future__ import annotations

import argparse
import signal

from ..arg_types import count
from . import Command, add_set_option

__all__ = ["COMMAND"]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "config", nargs="?", metavar="CONFIG", help="a shipped recipe or a YAML (default: study)"
    )
    parser.add_argument(
        "--seeds", type=int, default=None, metavar="N", help="seeds per arm (default 3; quick: 2)"
    )
    parser.add_argument(
        "--arms",
        nargs="+",
        metavar="ARM",
        help="baseline and UNDERSTANDING+GENERATION@SHARING[#STRATEGY] arms, e.g. "
        "himix+hmgen@task or himix+hmgen@task#full_steps=0.1,distill=1 (STRATEGY: "
        "strategy.* keys), or a named set: default (baseline himix+hmgen@modality "
        "himix+hmgen@task, used when --arms is not given) or synergy (those and one arm per "
        "synergy-aware strategy)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer seeds and steps: see it work, conclude nothing"
    )
    parser.add_argument(
        "--out", default="tokred-study", metavar="DIR", help="default ./tokred-study"
    )
    parser.add_argument(
        "--budget",
        choices=("matched", "full-batch", "tokens"),
        default="matched",
        help="matched: isolated runs train on the unified run's samples of their task "
        "(default); full-batch: whole batches of their task, the same steps; tokens: whole "
        "batches of their task until they have trained on as many tokens as the unified run",
    )
    parser.add_argument(
        "--jobs",
        type=count(1),
        default=None,
        metavar="N",
        help="runs trained at once, each in its own process (default: on the CPU, the "
        "cores over run.threads; 1 on a GPU)",
    )
    parser.add_argument(
        "--understanding", type=count(0), default=400, metavar="N", help="questions scored (400)"
    )
    parser.add_argument(
        "--generation", type=count(0), default=400, metavar="N", help="prompts scored (400)"
    )
    parser.add_argument(
        "--fid-weights",
        metavar="PATH",
        default=None,
        help="a local TorchScript FID network (inception-2015-12-05.pt): score generation by "
        "FID against the validation images (lower is better); nothing is downloaded",
    )
    add_set_option(parser, "a config override for every run, e.g. optim.max_steps=300")


def run(args: argparse.Namespace) -> int:
    from tokred_core import RunInterrupted

    from ..synergy_study import run_synergy_study

    try:
        run_synergy_study(
            args.config,
            seeds=args.seeds,
            arms=args.arms,
            quick=args.quick,
            out=args.out,
            budget=args.budget,
            jobs=args.jobs,
            overrides=args.overrides,
            num_understanding=args.understanding,
            num_generation=args.generation,
            fid_weights=args.fid_weights,
        )
    except KeyboardInterrupt as exc:
        # A stopped run's own message names its checkpoint and `run.resume`; for a study
        # the way on is the same command, which reuses every complete run and resumes
        # each stopped one from its checkpoint. (With --jobs the study's own process gets
        # a plain KeyboardInterrupt while its workers' runs checkpoint.)
        signum = exc.signum if isinstance(exc, RunInterrupted) else signal.SIGINT
        raise RunInterrupted(
            f"study interrupted; its complete runs and each stopped run's checkpoint are "
            f"kept under {args.out}: rerun the same command to finish it",
            signum,
        ) from exc
    return 0


COMMAND = Command(
    name="study",
    help="the synergy study: isolated vs unified, with and without acceleration, over seeds",
    description=__doc__,
    configure=configure,
    run=run,
)
