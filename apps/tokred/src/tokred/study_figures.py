"""Figures of a synergy study, drawn from what study.json holds.

- `plot_scores`: each task's score by arm and run kind, with 95% interval bars;
- `plot_synergy_vs_cost`: synergy kept against the cost-model FLOPs ratio, or against the
  measured step-time ratio, one point per accelerated arm and task (the Pareto view);
- `plot_pareto`: issue 10's goal in one figure: synergy kept against the FLOPs ratio and
  against the step-time ratio, every arm and task with both intervals, and the goal's
  lines (kept 0.9, FLOPs 0.6x, step time 1x);
- `plot_conflict`: the gradient cosine between the tasks per layer over training, one
  panel per parameter group, the baseline against the accelerated arms (when the study's
  runs measured it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from tokred_train.atomic import atomic_write  # noqa: E402
from tokred_train.study.goal import GOAL  # noqa: E402
from tokred_train.study.report import score_scale  # noqa: E402

__all__ = ["plot_scores", "plot_synergy_vs_cost", "plot_pareto", "plot_conflict"]

#: The y axis of a score kind's panel (the rest are shares, in %).
_Y_LABELS = {"val_loss": "loss x100", "fid": "FID (lower is better)"}
_KIND_COLORS = {
    "unified": "#4e79a7",
    "isolated-understanding": "#f28e2b",
    "isolated-generation": "#59a14f",
}


def _save(fig, path: Path) -> Path:
    """Atomically (a temp file, then a rename): a study stopped mid-figure leaves the
    previous figure or the new one, never a truncated PNG that report.md links."""
    fig.tight_layout()
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    finally:
        plt.close(fig)
    return path


def _bar(
    ax, x: float, est: Mapping[str, Any] | None, color: str, label: str | None, scale: float
) -> None:
    if not est or est.get("mean") is None:
        return
    mean = est["mean"] * scale
    err = None
    if est.get("low") is not None:
        err = [[mean - est["low"] * scale], [est["high"] * scale - mean]]
    ax.bar(x, mean, width=0.26, color=color, yerr=err, capsize=3, label=label)


def plot_scores(study: Mapping[str, Any], path: Path) -> Path:
    """One panel per task: the score of every arm's runs with their 95% intervals."""
    tasks = list(study["score_kinds"])
    arms = list(study["arms"])
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 + 1.3 * len(arms), 3.8), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        score_kind = study["score_kinds"][task]
        seen: set[str] = set()
        for i, arm in enumerate(arms):
            for j, (kind, color) in enumerate(_KIND_COLORS.items()):
                est = study["arms"][arm]["runs"].get(kind, {}).get(task, {}).get("estimate")
                label = kind if kind not in seen and est else None
                if label:
                    seen.add(kind)
                _bar(ax, i + (j - 1) * 0.28, est, color, label, score_scale(score_kind))
        ax.set_xticks(range(len(arms)), [a.replace("@", "\n@") for a in arms], fontsize=7)
        ax.set_title(f"{task} ({score_kind})", fontsize=9)
        ax.set_ylabel(_Y_LABELS.get(score_kind, "score (%)"))
        ax.legend(fontsize=7)
    return _save(fig, path)


def _kept_points(study: Mapping[str, Any], cost_key: str) -> list[tuple[str, str, float, Any]]:
    points = []
    for arm, numbers in study["arms"].items():
        cost = numbers["cost"].get("unified", {}).get(cost_key, {})
        for task, kept in numbers["synergy_kept"].items():
            if cost.get("mean") is not None and kept.get("mean") is not None:
                points.append((arm, task, cost["mean"], kept))
    return points


def plot_synergy_vs_cost(study: Mapping[str, Any], path: Path, cost_key: str) -> Path:
    """Synergy kept (y, with its Fieller interval where bounded) against the unified run's
    `cost_key` ratio to the baseline (x): flops_ratio or step_time_ratio."""
    fig, ax = plt.subplots(figsize=(5.2, 4))
    markers = {"understanding": "o", "generation": "s"}
    for arm, task, x, kept in _kept_points(study, cost_key):
        err = None
        if kept.get("low") is not None:
            err = [[kept["mean"] - kept["low"]], [kept["high"] - kept["mean"]]]
        ax.errorbar(x, kept["mean"], yerr=err, fmt=markers[task], capsize=3, label=f"{arm} {task}")
    ax.axhline(1.0, color="#999", lw=0.8, ls="--")
    ax.axhline(0.0, color="#999", lw=0.8)
    ax.scatter([1.0], [1.0], marker="*", s=120, color="black", label="baseline")
    ax.set_xlabel(
        "training FLOPs ratio (cost model)" if cost_key == "flops_ratio" else "step-time ratio"
    )
    ax.set_ylabel("synergy kept")
    ax.legend(fontsize=6)
    return _save(fig, path)


def _interval(est: Mapping[str, Any] | None) -> list[list[float]] | None:
    """errorbar's [[below], [above]] of an estimate; None where it is unbounded."""
    if not est or est.get("low") is None or est.get("mean") is None:
        return None
    return [[est["mean"] - est["low"]], [est["high"] - est["mean"]]]


def _pareto_panel(ax, study: Mapping[str, Any], cost_key: str, line: float) -> None:
    markers = {"understanding": "o", "generation": "s"}
    counted = set((study.get("findings") or {}).get("goal", {}).get("tasks", []))
    colors = plt.get_cmap("tab10")
    arms = [a for a in study["arms"] if a != "baseline"]
    for i, arm in enumerate(arms):
        numbers = study["arms"][arm]
        cost = numbers["cost"].get("unified", {}).get(cost_key) or {}
        for task, kept in numbers["synergy_kept"].items():
            if cost.get("mean") is None or kept.get("mean") is None:
                continue
            color = colors(i % 10)
            ax.errorbar(
                cost["mean"],
                kept["mean"],
                xerr=_interval(cost),
                yerr=_interval(kept),
                fmt=markers.get(task, "^"),
                color=color,
                # Hollow: the baseline shows no synergy on that task, so the goal skips it.
                mfc=color if task in counted else "none",
                capsize=3,
                label=f"{arm} ({task})",
            )
    ax.axhline(GOAL["kept"], color="#c44", lw=0.8, ls="--")
    ax.axvline(line, color="#c44", lw=0.8, ls="--")
    ax.scatter([1.0], [1.0], marker="*", s=120, color="black", label="baseline", zorder=3)
    ax.set_xlabel(
        "training FLOPs ratio (cost model)" if cost_key == "flops_ratio" else "step-time ratio"
    )
    ax.set_ylabel("synergy kept")


def plot_pareto(study: Mapping[str, Any], path: Path) -> Path:
    """Two panels, synergy kept (y) against the unified run's FLOPs ratio and against its
    measured step-time ratio (x), with their 95% intervals as error bars (none where
    Fieller's is unbounded); the goal lies above y = 0.9 and left of x = 0.6 (FLOPs) and
    x = 1 (step time). Hollow markers: tasks without baseline synergy."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    _pareto_panel(axes[0], study, "flops_ratio", GOAL["flops"])
    _pareto_panel(axes[1], study, "step_time_ratio", GOAL["step_time"])
    axes[0].set_title("synergy kept vs training FLOPs", fontsize=9)
    axes[1].set_title("synergy kept vs measured step time", fontsize=9)
    axes[1].legend(fontsize=6, loc="best")
    return _save(fig, path)


def plot_conflict(
    series: Mapping[str, Mapping[str, Mapping[int, Sequence[float]]]],
    steps: Mapping[str, Sequence[int]],
    path: Path,
) -> Path:
    """series[arm][group][layer] = cosine at each of steps[arm]: per layer, the cosine
    between the tasks' gradients over training (solid: the baseline; dashed: others)."""
    groups = sorted({g for per_arm in series.values() for g in per_arm})
    fig, axes = plt.subplots(
        1, max(len(groups), 1), figsize=(3.2 * max(len(groups), 1), 3.2), squeeze=False
    )
    cmap = plt.get_cmap("viridis")
    for ax, group in zip(axes[0], groups, strict=False):
        for arm, per_arm in series.items():
            layers = sorted(per_arm.get(group, {}))
            for layer in layers:
                color = cmap(layer / max(len(layers) - 1, 1))
                ax.plot(
                    steps[arm],
                    per_arm[group][layer],
                    color=color,
                    ls="-" if arm == "baseline" else "--",
                    lw=1,
                    label=f"{arm} L{layer}" if layer in (layers[0], layers[-1]) else None,
                )
        ax.axhline(0.0, color="#999", lw=0.8)
        ax.set_title(group, fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("cos(grad und, grad gen)")
        ax.legend(fontsize=6)
    return _save(fig, path)
