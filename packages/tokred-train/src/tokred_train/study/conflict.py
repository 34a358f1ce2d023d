"""A run's gradient-conflict measurements (conflict.jsonl, run/conflict.py) as series for
figures and reports: per group, one value per (measurement step, layer).

    conflict = read_conflict("runs/reduced")
    conflict["groups"]["q_proj"]["adjusted_cosine"][-1]   # by layer, at the last step
    layer_profile(conflict, "total")                       # by layer, mean over steps

Why a mean over steps: one probe of a few samples is noisy, and Uni-X
(arXiv 2509.24365) likewise averages its per-layer curves over checkpoints.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..run.conflict import CONFLICT_FILE
from ..run.log import read_jsonl

__all__ = ["SERIES_KEYS", "layer_profile", "read_conflict"]

#: The values of a row that become series (conflict.jsonl's columns besides step, layer,
#: group and numel).
SERIES_KEYS = (
    "cosine",
    "baseline_cosine",
    "adjusted_cosine",
    "norm_ratio",
    "norm_understanding",
    "norm_generation",
)


def _layer_order(layer: int | None) -> tuple[bool, int]:
    return (layer is None, layer or 0)  # the layers in order, then the groups outside them


def read_conflict(run_dir: str | Path) -> dict[str, Any]:
    """{"steps": [measured steps], "groups": {group: {"layers": [layer indices, then None
    for a value outside the layers], "numel": [...], key: [[value per layer] per step]}}}
    for every key of SERIES_KEYS; a value the file lacks (or null: a zero gradient) is
    None. A run measured nothing: {"steps": [], "groups": {}}."""
    rows = read_jsonl(Path(run_dir) / CONFLICT_FILE)
    steps = sorted({int(r["step"]) for r in rows})
    layers: dict[str, set[int | None]] = {}
    for r in rows:
        layers.setdefault(r["group"], set()).add(r["layer"])
    at_step = {s: i for i, s in enumerate(steps)}
    groups: dict[str, dict[str, Any]] = {}
    for group, present in layers.items():
        order = sorted(present, key=_layer_order)
        groups[group] = {"layers": order, "numel": [None] * len(order)}
        for key in SERIES_KEYS:
            groups[group][key] = [[None] * len(order) for _ in steps]
    for r in rows:
        entry = groups[r["group"]]
        column = entry["layers"].index(r["layer"])
        entry["numel"][column] = r.get("numel")
        for key in SERIES_KEYS:
            entry[key][at_step[int(r["step"])]][column] = r.get(key)
    return {"steps": steps, "groups": groups}


def _mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def layer_profile(
    conflict: dict[str, Any], group: str, key: str = "adjusted_cosine"
) -> dict[str, list[Any]]:
    """One group's `key` by layer: {"layers", "mean" (over the measured steps, nulls left
    out), "last" (at the last step)}; empty lists when the group was never measured."""
    if key not in SERIES_KEYS:
        raise ValueError(f"key {key!r}: expected one of {', '.join(SERIES_KEYS)}")
    entry = conflict["groups"].get(group)
    if entry is None or not conflict["steps"]:
        return {"layers": [], "mean": [], "last": []}
    series = entry[key]
    columns = range(len(entry["layers"]))
    return {
        "layers": list(entry["layers"]),
        "mean": [_mean([row[c] for row in series]) for c in columns],
        "last": list(series[-1]),
    }
