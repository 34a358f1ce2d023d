"""Figures of the attention-allocation diagnostic, after the paper's Figure 3.

- `plot_allocation`: per layer, the stacked share of attention each key segment receives
  (system / image / instruction / output), understanding and generation side by side.
  For generation the image is the output segment, so its bars have three parts.
- `plot_pies`: first- and last-layer pies of both tasks, with the paper's VILA-U 7B pies
  in a second row for comparison.
- `plot_image_share`: the image-modality share per layer of several runs on one axis.

Every function takes the allocation JSON (`tokred_train.eval.allocation.
allocation_to_dict`), an `AllocationResult`, or the path of an allocation.json, and writes
a PNG with the Agg backend (no display needed).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from tokred_core import TokredError  # noqa: E402

__all__ = [
    "SEGMENT_COLORS",
    "as_allocation",
    "plot_allocation",
    "plot_pies",
    "plot_image_share",
]

SEGMENT_COLORS = {
    "system": "#9e9e9e",
    "image": "#f28e2b",
    "instruction": "#4e79a7",
    "output": "#59a14f",
}
_TASKS = ("understanding", "generation")
# What the paper calls each segment per task (generation's output is the image).
_LABELS = {
    "understanding": {"output": "output (answer)"},
    "generation": {"output": "output (image tokens)"},
}


def as_allocation(source: Any) -> dict[str, Any]:
    """An allocation dict from a dict, an AllocationResult or an allocation.json path."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise TokredError(f"allocation file not found: {path}")
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise TokredError(f"{path} is not valid JSON: {exc}") from None
    if hasattr(source, "to_dict") and hasattr(source, "mass"):
        return source.to_dict()
    if isinstance(source, Mapping):
        return dict(source)
    raise TokredError(
        f"expected an allocation dict, AllocationResult or path, got {type(source).__name__}"
    )


def _segments(task: str, entry: Mapping[str, Any]) -> list[str]:
    names = list(entry["segments"])
    if task == "generation":
        return [s for s in names if s != "image"]  # there is no input image
    return names


def _tasks(alloc: Mapping[str, Any]) -> list[str]:
    tasks = [t for t in _TASKS if t in alloc and alloc[t].get("shares")]
    if not tasks:
        raise TokredError("the allocation holds neither understanding nor generation shares")
    return tasks


def _save(fig, path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
    return path


def plot_allocation(source: Any, path: str | os.PathLike[str], title: str | None = None) -> Path:
    """Stacked per-layer shares (percent) of each key segment, one panel per task."""
    alloc = as_allocation(source)
    tasks = _tasks(alloc)
    fig, axes = plt.subplots(1, len(tasks), figsize=(6.2 * len(tasks), 4.2), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        entry = alloc[task]
        names = list(entry["segments"])
        shares = entry["shares"]
        layers = list(range(len(shares)))
        bottom = [0.0] * len(shares)
        for seg in _segments(task, entry):
            col = names.index(seg)
            values = [100.0 * row[col] for row in shares]
            ax.bar(
                layers,
                values,
                bottom=bottom,
                color=SEGMENT_COLORS.get(seg),
                label=_LABELS.get(task, {}).get(seg, seg),
                width=0.8,
                edgecolor="white",
                linewidth=0.5,
            )
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
        ax.set_xlabel("layer")
        ax.set_ylabel("share of attention (%)")
        ax.set_ylim(0, 100)
        ax.set_xticks(layers)
        n = entry.get("num_samples")
        ax.set_title(f"{task}" + (f" ({n} samples)" if n else ""))
        ax.legend(
            loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=4, fontsize=8, frameon=False
        )
    fig.suptitle(title or "attention allocation per layer (share each key segment receives)")
    fig.tight_layout()
    return _save(fig, path)


def _pie(ax, values: Mapping[str, float], title: str) -> None:
    items = [(k, v) for k, v in values.items() if v > 0]
    if not items:
        ax.axis("off")
        ax.set_title(title + "\n(no data)", fontsize=9)
        return
    total = sum(v for _, v in items)
    wedges, _texts, _autotexts = ax.pie(
        [v for _, v in items],
        colors=[SEGMENT_COLORS.get(k) for k, _ in items],
        # Small slices get no label on the wedge (they would overlap); the legend has all.
        autopct=lambda p: f"{p:.0f}%" if p >= 6 else "",
        startangle=90,
        counterclock=False,
        textprops={"fontsize": 8},
        wedgeprops={"edgecolor": "white", "linewidth": 0.6},
    )
    ax.legend(
        wedges,
        [f"{k} {100 * v / total:.1f}%" for k, v in items],
        loc="upper center",
        bbox_to_anchor=(0.5, 0.02),
        ncol=2,
        fontsize=7,
        frameon=False,
    )
    ax.set_title(title, fontsize=9)


def _layer_values(task: str, entry: Mapping[str, Any], layer: int) -> dict[str, float]:
    names = list(entry["segments"])
    row = entry["shares"][layer]
    return {seg: float(row[names.index(seg)]) for seg in _segments(task, entry)}


def plot_pies(
    source: Any, path: str | os.PathLike[str], paper: bool = True, title: str | None = None
) -> Path:
    """First- and last-layer pies per task; `paper` adds the paper's pies as a second row."""
    alloc = as_allocation(source)
    tasks = _tasks(alloc)
    reference = alloc.get("paper") if paper else None
    rows = 2 if reference else 1
    cols = 2 * len(tasks)
    fig, axes = plt.subplots(rows, cols, figsize=(3.1 * cols, 3.6 * rows), squeeze=False)
    for t, task in enumerate(tasks):
        entry = alloc[task]
        last = len(entry["shares"]) - 1
        for k, (layer, name) in enumerate(((0, "first"), (last, "last"))):
            _pie(
                axes[0][2 * t + k],
                _layer_values(task, entry, layer),
                f"{task}\nlayer {layer} ({name}), this model",
            )
            if reference:
                ref = reference.get(task, {}).get(name, {})
                _pie(axes[1][2 * t + k], ref, f"{task}\n{name} layer, paper (VILA-U 7B)")
    fig.suptitle(title or "attention share per key segment, first and last layer")
    fig.tight_layout()
    return _save(fig, path)


def plot_image_share(
    runs: Mapping[str, Any], path: str | os.PathLike[str], title: str | None = None
) -> Path:
    """Image-modality share per layer (understanding: image segment; generation: output)
    for each named allocation in `runs`, one panel per task."""
    if not runs:
        raise TokredError("plot_image_share needs at least one allocation")
    allocs = {name: as_allocation(src) for name, src in runs.items()}
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), squeeze=False)
    for ax, task in zip(axes[0], _TASKS, strict=True):
        seg = "output" if task == "generation" else "image"
        for name, alloc in allocs.items():
            entry = alloc.get(task)
            if not entry or not entry.get("shares"):
                continue
            col = list(entry["segments"]).index(seg)
            values = [100.0 * row[col] for row in entry["shares"]]
            ax.plot(range(len(values)), values, marker="o", label=name)
            ax.set_xticks(range(len(values)))
        ax.set_xlabel("layer")
        ax.set_ylabel(f"{seg} share (%)")
        ax.set_ylim(bottom=0)
        ax.set_title(f"{task}: attention to image tokens")
        ax.legend(fontsize=8)
    fig.suptitle(title or "image-token share of attention per layer")
    fig.tight_layout()
    return _save(fig, path)
