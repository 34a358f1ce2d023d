"""The synergy study as one call: run every arm at every seed, probe the baseline, and
write study.json and report.md.

    numbers = run_study(load_config("study"), ["baseline", "himix+hmgen@task"], seeds=3,
                        out_dir="tokred-study")

It runs on any config `tokred train` takes (the embedded benchmark, or a real model's
recipe); only the scores differ: detector scores on the shapes set, the validation
image-token loss for generation elsewhere, or FID everywhere when `fid_weights` names a
local FID network (the report says which).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tokred_core import TokredError

from ..atomic import atomic_write_text
from ..config import TrainConfig, config_to_dict
from ..eval.allocation import allocation_summary, allocation_to_dict, attention_allocation
from ..eval.run import load_run
from .aggregate import aggregate
from .arms import Arm, RunSpec, parse_arms
from .findings import findings
from .report import render_report
from .runner import Budget, RunRecord, StudyRunner

__all__ = ["STUDY_FILE", "REPORT_FILE", "run_study", "check_study_config"]

STUDY_FILE = "study.json"
REPORT_FILE = "report.md"
ALLOCATION_FILE = "allocation.json"


def check_study_config(config: TrainConfig, seeds: int) -> None:
    """Fail before any training on what would make the study meaningless."""
    if seeds < 1:
        raise TokredError(f"--seeds {seeds}: need at least 1 (3 or more for intervals)")
    ratio = config.data.understanding_ratio
    if not 0 < ratio < 1:
        raise TokredError(
            f"data.understanding_ratio={ratio}: the study trains both tasks together, so "
            "it needs a ratio strictly between 0 and 1"
        )
    if sorted(config.data.train_tasks) != ["generation", "understanding"]:
        raise TokredError(
            f"data.train_tasks={config.data.train_tasks}: the study sets it per run; "
            "leave it at both tasks in the config"
        )
    if not config.eval.at_end or config.data.num_val < 1:
        raise TokredError(
            "the study scores held-out data: keep eval.at_end=true and data.num_val above 0"
        )


def _baseline_allocation(
    runner: StudyRunner, seed: int, samples: int, say: Callable[[str], None]
) -> dict[str, Any] | None:
    """The probe on the baseline's unified model (cached in the study folder)."""
    cached = runner.out_dir / ALLOCATION_FILE
    if cached.is_file():
        return json.loads(cached.read_text(encoding="utf-8"))
    run_dir = runner.run_dir(RunSpec("baseline", ("understanding", "generation")), seed)
    if not run_dir.is_dir():
        return None
    say(f"probing the baseline's attention allocation (seed {seed})")
    run = load_run(run_dir)
    alloc = allocation_to_dict(attention_allocation(run.model, run.data, num_samples=samples))
    out = {
        "allocation": alloc,
        "summaries": {t: allocation_summary(alloc[t], t) for t in ("understanding", "generation")},
    }
    atomic_write_text(cached, json.dumps(out, indent=2) + "\n")
    return out


def run_study(
    config: TrainConfig,
    arms: Sequence[str] | Sequence[Arm],
    seeds: int,
    out_dir: str | Path,
    *,
    budget: Budget = "matched",
    jobs: int = 1,
    num_understanding: int = 400,
    num_generation: int = 400,
    probe_samples: int = 32,
    fid_weights: str | Path | None = None,
    on_event: Callable[[str], None] | None = None,
    draw_figures: Callable[[dict[str, Any], Path], Sequence[str]] | None = None,
) -> dict[str, Any]:
    """Run (or finish) the study into `out_dir`; returns what study.json holds.
    `jobs`: runs trained at once, each in its own process (StudyRunner.run_all); the
    runner checks it, like the budget, before anything is trained or written.
    `draw_figures(study, out_dir)` draws figures (tokred-train has no plotting) and returns
    their paths relative to out_dir, which report.md then links. `fid_weights`: a local
    TorchScript FID network (eval/fid.py): generation is then scored by FID, and the
    file is read before anything is trained."""
    check_study_config(config, seeds)
    arm_list = parse_arms(list(arms)) if arms and isinstance(arms[0], str) else list(arms)
    out = Path(out_dir)
    say = on_event or (lambda message: None)
    runner = StudyRunner(
        config,
        out,
        budget=budget,
        num_understanding=num_understanding,
        num_generation=num_generation,
        jobs=jobs,
        on_event=say,
        fid_weights=fid_weights,
    )
    started = time.perf_counter()
    seed_list = [config.run.seed + i for i in range(seeds)]
    runner.check(arm_list, seed_list)
    out.mkdir(parents=True, exist_ok=True)
    say(f"{len(arm_list)} arms x {len(seed_list)} seeds into {out}, {jobs} run(s) at a time")
    records: list[RunRecord] = runner.run_all(arm_list, seed_list)
    alloc = _baseline_allocation(runner, seed_list[0], probe_samples, say)
    numbers = aggregate(records, [a.name for a in arm_list])
    study = {
        "arm_specs": {a.name: a.to_dict() for a in arm_list},
        "seeds": seed_list,
        "budget": budget,
        "jobs": jobs,
        "eval": {
            "num_understanding": num_understanding,
            "num_generation": num_generation,
            "fid_weights": str(fid_weights) if fid_weights is not None else None,
        },
        "config": config_to_dict(config),
        "records": [r.to_dict() for r in records],
        **numbers,
        "allocation_summaries": alloc["summaries"] if alloc else None,
        "findings": findings(numbers, alloc["summaries"] if alloc else None),
        "wall_time_s": time.perf_counter() - started,
    }
    atomic_write_text(out / STUDY_FILE, json.dumps(study, indent=2) + "\n")
    figures = list(draw_figures(study, out)) if draw_figures is not None else []
    atomic_write_text(out / REPORT_FILE, render_report(study, figures))
    return study
