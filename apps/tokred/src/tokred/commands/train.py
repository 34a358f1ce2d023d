"""`tokred train CONFIG [KEY=VALUE ...]`: train a unified model as a YAML config says.

CONFIG is a YAML file or the name of a shipped recipe (tokred/configs/*.yaml, e.g.
`tiny-shapes`). Overrides set any key of the config tree (`optim.lr=1e-3`,
`reduction.understanding=himix`, `run.resume=true`); a bad key or value stops with one
line naming it. With `--print-config` the resolved config is printed and nothing is
trained.
"""

from __future__ import annotations

import argparse

from . import Command

__all__ = ["COMMAND"]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "config", metavar="CONFIG", help="a YAML config file, or a shipped recipe name"
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="set a config key, e.g. optim.lr=1e-3 run.out_dir=runs/x run.resume=true",
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved config as YAML and exit without training",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the run summary as one JSON object"
    )


def run(args: argparse.Namespace) -> int:
    from ..training import run_training

    print(run_training(args.config, args.overrides, args.print_config, args.json), end="")
    return 0


COMMAND = Command(
    name="train",
    help="train a unified model from a YAML config (tokred train CONFIG [KEY=VALUE ...])",
    description=__doc__,
    configure=configure,
    run=run,
)
