"""`tokred eval RUN_DIR`: task metrics of a trained run, written to RUN_DIR/eval/.

- understanding: greedy answers to the held-out questions, exact match overall and per
  question type, each with its chance level (1 / distinct answers of the type) and its
  majority-answer baseline;
- generation: one image per held-out caption (greedy over image codes only, or seeded
  sampling with --temperature), checked by the shapes detector for kind, colour and
  position (chance 1/3, 1/4, 1/4), plus a PNG grid of prompts and images;
- with --fid-weights FILE (your local copy of the standard FID network
  inception-2015-12-05.pt, a TorchScript file; nothing is downloaded): the FID of the
  generated images against the validation images of the same prompts (lower is better),
  on the shapes set and on real data alike.

The model is evaluated under the reduction it was trained with (decoding without a KV
cache, the full sequence and its layout every step); --policy none evaluates it without
(its image projection sets stay in use), and a run without reduction decodes with the
cache. Writes eval.json, predictions.jsonl and samples.png.
"""

from __future__ import annotations

import argparse
import json

from ..arg_types import count, finite_float, out_folder
from . import Command

__all__ = ["COMMAND"]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the out_dir of a `tokred train` run")
    parser.add_argument(
        "--out", type=out_folder, metavar="DIR", help="output folder (default RUN_DIR/eval)"
    )
    parser.add_argument(
        "--understanding",
        type=count(0),
        default=200,
        metavar="N",
        help="questions to score (default 200)",
    )
    parser.add_argument(
        "--generation", type=count(0), default=48, metavar="N", help="captions to draw (default 48)"
    )
    parser.add_argument(
        "--policy",
        default="run",
        metavar="SPEC",
        help="run (the run's own reduction, default), none, or a policy spec as in `tokred analyze`",
    )
    parser.add_argument(
        "--mode",
        choices=("auto", "reduced", "cached"),
        default="auto",
        help="decoding: reduced = no KV cache, layout every step (needed under a reduction); "
        "cached = plain forward with KV cache (unreduced); auto picks (default)",
    )
    parser.add_argument(
        "--temperature",
        type=finite_float(0.0),
        default=0.0,
        help="0: greedy (default); > 0: seeded sampling",
    )
    parser.add_argument(
        "--cfg-weight",
        type=finite_float(),
        default=None,
        metavar="W",
        help="classifier-free guidance for Janus generation (Janus-Pro samples with 5); "
        "default: none",
    )
    parser.add_argument(
        "--fid-weights",
        metavar="PATH",
        default=None,
        help="a local TorchScript FID network (inception-2015-12-05.pt): also score the "
        "generated images by FID against the validation images; nothing is downloaded",
    )
    parser.add_argument("--seed", type=count(0), default=0, help="sampling seed (default 0)")
    parser.add_argument("--batch-size", type=count(1), default=64, metavar="B", help="default 64")
    parser.add_argument("--json", action="store_true", help="print eval.json instead of a summary")


def run(args: argparse.Namespace) -> int:
    from ..evaluation import evaluate, format_eval

    out = evaluate(
        args.run_dir,
        args.out,
        understanding=args.understanding,
        generation=args.generation,
        policy=args.policy,
        mode=args.mode,
        temperature=args.temperature,
        seed=args.seed,
        batch_size=args.batch_size,
        cfg_weight=args.cfg_weight,
        fid_weights=args.fid_weights,
    )
    print(json.dumps(out, indent=2) if args.json else format_eval(out))
    return 0


COMMAND = Command(
    name="eval",
    help="understanding accuracy and generation scores (detector, or FID) of a trained run",
    description=__doc__,
    configure=configure,
    run=run,
)
