"""A finished run's summary.json: what it trained, how fast, on what, with which result.

Kept apart from the loop because it is read by people and by `tokred study` (the step
time, tokens/s, peak memory and the final metrics of each run), and its keys are a
contract: renaming one breaks the study's cost table.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from ..config import config_to_dict
from .distributed import DistInfo
from .log import peak_memory_bytes
from .result import RunResult

__all__ = ["SUMMARY_FILE", "run_summary"]

SUMMARY_FILE = "summary.json"


def run_summary(
    result: RunResult,
    device: torch.device,
    bf16: bool,
    dist: DistInfo,
    train_time: float,
    wall_time: float,
    first_step_time: float | None,
    conflict: dict[str, Any],
) -> dict[str, Any]:
    rows = result.history
    steps = len(rows)
    tokens = sum(r["tokens"] for r in rows)
    samples = sum(r["samples"] for r in rows)
    steady = [r["step_time_s"] for r in rows[1:]]
    memory, memory_kind = peak_memory_bytes(device)
    built = result.built
    cfg = result.config
    return {
        "run_dir": str(result.run_dir),
        "steps": result.last_step,
        "start_step": result.start_step,
        "steps_this_run": steps,
        "wall_time_s": wall_time,
        "train_time_s": train_time,
        # train_time_s counts optimizer steps only (no start-up, validation or checkpoints)
        "tokens_per_s": tokens / train_time if train_time > 0 else None,
        "samples_per_s": samples / train_time if train_time > 0 else None,
        "step_time_s": (sum(steady) / len(steady)) if steady else first_step_time,
        "first_step_time_s": first_step_time,
        "peak_memory_bytes": memory,
        "peak_memory_kind": memory_kind,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(),
        "world_size": dist.world_size,
        "bf16_autocast": bf16,
        "model_type": built.model_type,
        "num_layers": built.num_layers,
        "trainable_parameters": built.trainable_parameters,
        "total_parameters": built.total_parameters,
        "quantized_modules": len(built.quantized_modules),
        "lora_modules": len(built.lora.adapted) if built.lora else 0,
        "lora_image_projections": len(built.lora.image_projections) if built.lora else 0,
        "policies": {
            task.name.lower(): {"policy": p.name, "config": dataclasses.asdict(p.config)}
            for task, p in built.handle.policies.policies.items()
        },
        "sharing": built.handle.sharing.value,
        "data": result.data.info,
        # run.conflict_every's measurements: their time is in wall_time_s, not in step times
        "gradient_conflict": conflict,
        "final": result.metrics,
        "config": config_to_dict(cfg),
    }
