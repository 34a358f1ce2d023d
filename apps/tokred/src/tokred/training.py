"""The work of `tokred train`: a shipped recipe or a YAML file, with overrides, trained
(tokred_train.run.loop), and the lines the command prints about the run."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from tokred_train.config import config_to_dict, load_config

from .recipes import resolve_config_path

if TYPE_CHECKING:
    from tokred_train.run.loop import RunResult

__all__ = ["format_run", "run_training"]


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def format_run(result: RunResult) -> str:
    """Where the run went, its final metrics and its speed, a line each."""
    s = result.summary
    metrics = " ".join(f"{k}={_fmt(v)}" for k, v in result.metrics.items() if v is not None)
    lines = [
        f"run: {result.run_dir} (steps {result.start_step}..{result.last_step})",
        f"final: {metrics}",
    ]
    if s and s.get("step_time_s") and s.get("tokens_per_s"):
        lines.append(
            f"speed: {s['tokens_per_s']:.0f} tokens/s, {s['samples_per_s']:.1f} samples/s, "
            f"{s['step_time_s'] * 1000:.1f} ms/step on {s['device_name']}; "
            f"peak memory {s['peak_memory_bytes'] / 2**20:.0f} MiB ({s['peak_memory_kind']})"
        )
    return "\n".join(lines)


def run_training(
    config: str, overrides: list[str], print_config: bool = False, as_json: bool = False
) -> str:
    """`tokred train`: the resolved config as YAML (print_config: nothing is trained), else
    train it and return the run summary (as one JSON object with `as_json`); the text ends
    with a newline, and is empty on a rank other than 0 under torchrun."""
    resolved = load_config(resolve_config_path(config), overrides)
    if print_config:
        import yaml

        return yaml.safe_dump(config_to_dict(resolved), sort_keys=False)
    # the model stack, only to train
    from tokred_train.run.distributed import dist_info, shutdown_distributed
    from tokred_train.run.loop import train

    result = train(resolved)
    info = dist_info()
    # train() leaves the process group to its caller (who may gather a sharded model);
    # the command is done with it, and leaving it to the interpreter's exit is unsafe.
    shutdown_distributed(info)
    if not info.is_main:  # under torchrun only rank 0 reports
        return ""
    if as_json:
        return json.dumps(result.summary, default=str) + "\n"
    return format_run(result) + "\n"
