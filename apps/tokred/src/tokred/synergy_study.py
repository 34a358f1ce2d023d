"""tokred study: the synergy study as one command, with its figures.

The engine is `tokred_train.study` (arms, resumable runs, statistics, study.json,
report.md); this module resolves the recipe, applies --quick, prints progress, draws the
figures and adds them to the report.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["QUICK", "STUDY_RECIPE", "run_synergy_study"]

STUDY_RECIPE = "study"
#: --quick: the same grid at fewer seeds and steps, to see the whole study work (its
#: intervals are too wide to conclude anything; the report says what it ran).
QUICK = {"seeds": 2, "overrides": ["optim.max_steps=150", "data.num_val=60"]}
FIGURES = {
    "scores": "figures/scores.png",
    "kept_vs_flops": "figures/synergy_kept_vs_flops.png",
    "kept_vs_time": "figures/synergy_kept_vs_step_time.png",
    "conflict": "figures/gradient_conflict.png",
    "pareto": "figures/synergy_pareto.png",
}
#: The parameter groups whose gradient conflict the figure shows, per layer.
CONFLICT_GROUPS = ("total", "q_proj", "mlp")


def _say(t0: float):
    def say(message: str) -> None:
        print(f"[{time.perf_counter() - t0:7.1f}s] {message}", file=sys.stderr, flush=True)

    return say


def _conflict_series(study: dict[str, Any], out: Path):
    """Per arm, the first seed's unified run: series[arm][group][layer] over its steps."""
    from tokred_train.study.arms import arm_folder
    from tokred_train.study.conflict import read_conflict

    series: dict[str, dict[str, dict[int, list]]] = {}
    steps: dict[str, list[int]] = {}
    for arm in study["arms"]:
        run = out / "runs" / arm_folder(arm) / "unified" / f"seed-{study['seeds'][0]}"
        conflict = read_conflict(run)
        if not conflict["steps"]:
            continue
        steps[arm] = conflict["steps"]
        series[arm] = {}
        for group in CONFLICT_GROUPS:
            entry = conflict["groups"].get(group)
            if entry is None:
                continue
            series[arm][group] = {
                layer: [row[i] if row[i] is not None else float("nan") for row in entry["cosine"]]
                for i, layer in enumerate(entry["layers"])
                if layer is not None
            }
    return series, steps


def _figures(study: dict[str, Any], out: Path) -> list[str]:
    from .study_figures import plot_conflict, plot_pareto, plot_scores, plot_synergy_vs_cost

    plot_scores(study, out / FIGURES["scores"])
    plot_synergy_vs_cost(study, out / FIGURES["kept_vs_flops"], "flops_ratio")
    plot_synergy_vs_cost(study, out / FIGURES["kept_vs_time"], "step_time_ratio")
    plot_pareto(study, out / FIGURES["pareto"])
    drawn = [FIGURES["scores"], FIGURES["kept_vs_flops"], FIGURES["kept_vs_time"]]
    drawn.append(FIGURES["pareto"])
    series, steps = _conflict_series(study, out)
    if series:
        plot_conflict(series, steps, out / FIGURES["conflict"])
        drawn.append(FIGURES["conflict"])
    return drawn


def default_jobs(cfg: Any) -> int:
    """Runs at once when --jobs is not given: on a CPU-only run, as many as the cores hold
    at run.threads each (so a 2-core machine trains two 1-thread runs); one on a GPU,
    whose runs would contend for the one device."""
    import torch

    on_gpu = cfg.run.device.startswith("cuda") or (
        cfg.run.device == "auto" and torch.cuda.is_available()
    )
    if on_gpu or not cfg.run.threads:
        return 1
    return max(1, (os.cpu_count() or 1) // cfg.run.threads)


def run_synergy_study(
    config: str | None,
    *,
    seeds: int | None,
    arms: Sequence[str] | None,
    quick: bool,
    out: str,
    budget: str,
    overrides: Sequence[str],
    jobs: int | None = None,
    num_understanding: int,
    num_generation: int,
    fid_weights: str | None = None,
) -> dict[str, Any]:
    """Run (or finish) the study; returns study.json's content."""
    from tokred_train import load_config
    from tokred_train.study.arms import DEFAULT_ARMS
    from tokred_train.study.driver import REPORT_FILE, run_study

    from .recipes import resolve_config_path

    t0 = time.perf_counter()
    extra = list(QUICK["overrides"]) if quick else []
    cfg = load_config(resolve_config_path(config or STUDY_RECIPE), [*extra, *overrides])
    n_seeds = seeds if seeds is not None else (QUICK["seeds"] if quick else 3)
    out_dir = Path(out)
    say = _say(t0)
    if jobs is None:
        jobs = default_jobs(cfg)
    study = run_study(
        cfg,
        list(arms or DEFAULT_ARMS),
        n_seeds,
        out_dir,
        budget=budget,  # type: ignore[arg-type]
        jobs=jobs,
        num_understanding=num_understanding,
        num_generation=num_generation,
        fid_weights=fid_weights,
        on_event=say,
        draw_figures=_figures,
    )
    say(f"done: {out_dir / REPORT_FILE}")
    return study
