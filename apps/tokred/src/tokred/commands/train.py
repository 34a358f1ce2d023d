"""`tokred train CONFIG [KEY=VALUE ...]`: train a unified model as a YAML config says.

CONFIG is a YAML file or the name of a shipped recipe (tokred/configs/*.yaml, e.g.
`tiny-shapes`). Overrides set any key of the config tree (`optim.lr=1e-3`,
`reduction.understanding=himix`, `run.resume=true`); a bad key or value stops with one
line naming it. With `--print-config` the resolved config is printed and nothing is
trained.
"""

from __future__ import annotations

import argparse
import json
from importlib import resources
from pathlib import Path
from typing import Any

from tokred_core import TokredError

from . import Command

__all__ = ["COMMAND", "shipped_configs", "resolve_config_path"]


def shipped_configs() -> dict[str, Path]:
    """Recipe name -> path of the YAML files shipped in tokred/configs."""
    folder = resources.files("tokred") / "configs"
    out = {}
    for entry in folder.iterdir():
        if entry.name.endswith((".yaml", ".yml")):
            out[entry.name.rsplit(".", 1)[0]] = Path(str(entry))
    return dict(sorted(out.items()))


def resolve_config_path(name: str) -> Path:
    """A file path as given, else a shipped recipe of that name (with or without .yaml)."""
    path = Path(name)
    if path.is_file():
        return path
    shipped = shipped_configs()
    stem = path.name.rsplit(".", 1)[0] if path.suffix in (".yaml", ".yml") else path.name
    if str(path) == path.name and stem in shipped:
        return shipped[stem]
    raise TokredError(
        f"config file not found: {name} (shipped recipes: {', '.join(shipped) or 'none'})"
    )


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


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def run(args: argparse.Namespace) -> int:
    from tokred_train.config import config_to_dict, load_config

    config = load_config(resolve_config_path(args.config), args.overrides)
    if args.print_config:
        import yaml

        print(yaml.safe_dump(config_to_dict(config), sort_keys=False), end="")
        return 0
    from tokred_train.run.distributed import dist_info
    from tokred_train.run.loop import train

    result = train(config)
    if not dist_info().is_main:  # under torchrun only rank 0 reports
        return 0
    if args.json:
        print(json.dumps(result.summary, default=str))
        return 0
    s = result.summary
    metrics = " ".join(f"{k}={_fmt(v)}" for k, v in result.metrics.items() if v is not None)
    print(f"run: {result.run_dir} (steps {result.start_step}..{result.last_step})")
    print(f"final: {metrics}")
    if s and s.get("step_time_s") and s.get("tokens_per_s"):
        print(
            f"speed: {s['tokens_per_s']:.0f} tokens/s, {s['samples_per_s']:.1f} samples/s, "
            f"{s['step_time_s'] * 1000:.1f} ms/step on {s['device_name']}; "
            f"peak memory {s['peak_memory_bytes'] / 2**20:.0f} MiB ({s['peak_memory_kind']})"
        )
    return 0


COMMAND = Command(
    name="train",
    help="train a unified model from a YAML config (tokred train CONFIG [KEY=VALUE ...])",
    description=__doc__,
    configure=configure,
    run=run,
)
