"""`tokred flops`: analytic FLOPs of a policy against no reduction, on one canonical sample.

The sample has T text and M image tokens laid out by `tokred_core.canonical_spans`; the
conventions (what is counted, causal pairs, training = 3x forward, the paper's asymptotic
convention) are printed with the result so a number is never read without them.
"""

from __future__ import annotations

import argparse
import json

from tokred_core import TASK_NAMES, available_policies
from tokred_core.cost import CAUSAL_MODES
from tokred_core.shapes import PRESETS

from ..arg_types import MAX_TOKENS, count
from ..flops_table import flops_result, render_table
from . import Command, add_set_option

__all__ = ["COMMAND"]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        required=True,
        metavar="PRESET|CONFIG.JSON",
        help=f"a preset ({', '.join(sorted(PRESETS))}) or a Hugging Face config.json",
    )
    parser.add_argument(
        "--policy", required=True, metavar="NAME", help=f"one of {', '.join(available_policies())}"
    )
    add_set_option(parser, "a policy config field, e.g. --set num_shallow=5 (repeatable)")
    parser.add_argument(
        "--text-tokens",
        type=count(0, MAX_TOKENS),
        required=True,
        metavar="T",
        help="text tokens per sample",
    )
    parser.add_argument(
        "--image-tokens",
        type=count(0, MAX_TOKENS),
        required=True,
        metavar="M",
        help="image tokens per sample",
    )
    parser.add_argument(
        "--task",
        choices=TASK_NAMES,
        help="default: the policy's own task (generation for hmgen, else understanding)",
    )
    parser.add_argument(
        "--causal",
        choices=CAUSAL_MODES,
        default="exact",
        help="exact: count causally visible (query, key) pairs only; dense: every pair (default: exact)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object instead of a table"
    )


def run(args: argparse.Namespace) -> int:
    result = flops_result(
        args.config,
        args.policy,
        args.overrides,
        args.text_tokens,
        args.image_tokens,
        task=args.task,
        causal=args.causal,
    )
    print(json.dumps(result, indent=2) if args.json else render_table(result))
    return 0


COMMAND = Command(
    name="flops",
    help="analytic FLOPs of a reduction policy against no reduction",
    description=__doc__,
    configure=configure,
    run=run,
)
