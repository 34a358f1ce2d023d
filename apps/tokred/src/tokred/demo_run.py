"""The work of `tokred demo`: the demo recipe (tokred/configs/demo.yaml) trained twice,
evaluated, probed, priced and written up.

    run_demo(out)   ->  prepare  ->  train both runs  ->  evaluate and probe each
                    ->  compare costs  ->  metrics.json + report.md

Each step is a function here; the numbers they gather go into one metrics dict, which
`tokred.report` renders (and can render again from metrics.json alone).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tokred_core import DecoderShape, Task, TaskPolicies, TokredError, plan_cost
from tokred_train import MixedBatchSampler, load_config, train
from tokred_train.atomic import atomic_write_text
from tokred_train.config import TrainConfig
from tokred_train.eval.run import evaluate_run, run_from_result
from tokred_train.run.loop import RunResult

from . import report
from .analysis import analyze_run, describe_policies
from .demo_folder import RUN_NAMES, claim_folder, record_files
from .figures import plot_image_share
from .findings import above_chance, allocation_digest
from .recipes import demo_recipe, demo_steps

__all__ = ["DEMO_REDUCTION", "demo_config", "plan_flops", "run_demo"]

#: The reduced run: HiMix (understanding) + HMGen (generation), one image Q/K/V set per task.
DEMO_REDUCTION: dict[str, Any] = {
    "understanding": {"policy": "himix"},
    "generation": {"policy": "hmgen", "options": {"num_shallow": 1}},
    "sharing": "task",
}

#: What the allocation figures call each run.
_ALLOC_LABEL = {"baseline": "no reduction", "reduced": "HiMix + HMGen"}

#: The training summary keys metrics.json keeps per run.
_TRAIN_KEYS = (
    "steps",
    "train_time_s",
    "wall_time_s",
    "step_time_s",
    "first_step_time_s",
    "tokens_per_s",
    "samples_per_s",
    "trainable_parameters",
    "total_parameters",
    "torch_threads",
)


def demo_config(
    out: Path, name: str, steps: int, reduced: bool, overrides: list[str]
) -> TrainConfig:
    """The checked TrainConfig of one demo run: the demo recipe (with DEMO_REDUCTION for
    the reduced run), the user's overrides, its step count and its run folder."""
    raw = demo_recipe()
    if reduced:
        raw["reduction"] = json.loads(json.dumps(DEMO_REDUCTION))
    return load_config(
        raw, [*overrides, f"optim.max_steps={steps}", f"run.out_dir={out / 'runs' / name}"]
    )


def _auto_threads() -> int:
    """All cores on an idle machine; one when other work keeps it busy, because tiny ops
    split over threads that must wait for a busy core run many times slower."""
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:
        return cores
    return max(1, min(cores, int(cores - load + 0.5)))


def _process_age() -> float | None:
    """Seconds since this process started (Linux), to count the imports in the wall time."""
    try:
        ticks = os.sysconf("SC_CLK_TCK")
        start = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - start / ticks
    except (OSError, ValueError, IndexError):
        return None


def plan_flops(data: Any, policies: Any, shape: Any, cfg: Any, num_batches: int) -> dict[str, Any]:
    """Cost-model FLOPs of `policies` vs none on the first training micro-batches (the
    layouts the runs really trained on), overall and per task, both conventions."""
    sampler = MixedBatchSampler(
        data.sizes(), cfg.data.understanding_ratio, cfg.optim.batch_size, cfg.run.seed
    )
    none = TaskPolicies()
    sums: dict[str, dict[str, int]] = {}
    for m in range(num_batches):
        layout = data.collate(sampler.draw(m))["layout"]
        parts = {"mixed": layout}
        for task in Task:
            rows = layout.task_mask(task)
            if bool(rows.any()):
                parts[task.name.lower()] = layout.select(rows)
        for name, part in parts.items():
            base = plan_cost(none.plan(part, shape.num_layers), shape)
            mine = plan_cost(policies.plan(part, shape.num_layers), shape)
            acc = sums.setdefault(
                name, {"base": 0, "policy": 0, "base_paper": 0, "policy_paper": 0}
            )
            acc["base"] += base.forward_flops
            acc["policy"] += mine.forward_flops
            acc["base_paper"] += base.paper_units
            acc["policy_paper"] += mine.paper_units
    out: dict[str, Any] = {"batches": num_batches, "causal": "exact"}
    for name, acc in sums.items():
        out[name] = {
            "baseline_forward_flops": acc["base"],
            "policy_forward_flops": acc["policy"],
            "ratio": acc["policy"] / acc["base"],
            "paper_convention_ratio": acc["policy_paper"] / acc["base_paper"],
        }
    return out


@dataclass
class _Demo:
    """One demo's settings and what its steps gather."""

    out: Path
    steps: int
    threads: int
    overrides: list[str]
    configs: dict[str, TrainConfig]
    t0: float
    """perf_counter() when the demo started (after the argument checks)."""
    age: float | None
    """Seconds the process had run by then (Python start-up and imports), if known."""
    load_start: float | None
    """The machine's 1-minute load average at the start."""
    results: dict[str, RunResult] = field(default_factory=dict)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)

    def say(self, message: str) -> None:
        print(f"[{time.perf_counter() - self.t0:6.1f}s] {message}", flush=True)


def _prepare(
    out: Path,
    steps: int | None,
    threads: int,
    probe_samples: int,
    overrides: list[str] | None,
    force: bool,
) -> _Demo:
    """Check the arguments, build both configs, claim the output folder (see
    tokred.demo_folder: only an earlier demo's own files are removed), set the threads."""
    steps = demo_steps() if steps is None else steps
    if steps < 1:
        raise TokredError(f"--steps {steps}: need at least 1 training step")
    if probe_samples < 1:
        raise TokredError(f"--probe-samples {probe_samples}: need at least 1")
    overrides = list(overrides or [])
    configs = {
        name: demo_config(out, name, steps, name == "reduced", overrides) for name in RUN_NAMES
    }
    claim_folder(out, force)  # before any training: a refused folder is left as it was
    t0, age = time.perf_counter(), _process_age()
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    n_threads = threads if threads > 0 else _auto_threads()
    torch.set_num_threads(n_threads)
    demo = _Demo(out, steps, n_threads, overrides, configs, t0, age, load_start)
    demo.say(f"tokred demo into {out} ({steps} steps per run, {n_threads} torch threads)")
    return demo


def _run_entry(result: RunResult) -> dict[str, Any]:
    """What metrics.json keeps of one training run."""
    s = result.summary
    return {
        "policies": describe_policies(result.handle.policies),
        "sharing": s.get("sharing"),
        "train": {k: s.get(k) for k in _TRAIN_KEYS},
        "final": s.get("final", {}),
        "loss_curve": [
            {
                "step": h["step"],
                "loss": h["loss"],
                "loss_understanding": h["loss_understanding"],
                "loss_generation": h["loss_generation"],
            }
            for h in result.history
        ],
        "run_dir": str(result.run_dir),
    }


def _train_both(demo: _Demo) -> bool:
    """Train both runs; True when they share the very same vocabulary and VQ codebook."""
    for name, cfg in demo.configs.items():
        started = time.perf_counter()
        demo.results[name] = result = train(cfg)
        record_files(demo.out, complete=False)  # each run's files listed as soon as written
        demo.runs[name] = _run_entry(result)
        s = result.summary
        demo.say(
            f"trained {name} in {time.perf_counter() - started:.1f}s "
            f"(step {s.get('step_time_s', 0):.3f}s, final loss {s.get('final', {}).get('loss', float('nan')):.3f})"
        )
    base, reduced = demo.results["baseline"], demo.results["reduced"]
    same = base.vocab == reduced.vocab and bool((base.vq.codebook == reduced.vq.codebook).all())
    if not same:  # the data pipeline is deterministic; a difference is a bug worth stopping on
        raise TokredError("the two demo runs built different vocabularies or VQ codebooks")
    return same


def _evaluate_and_probe(
    demo: _Demo, eval_understanding: int | None, eval_generation: int | None, probe_samples: int
) -> None:
    """Task metrics, sample grid and attention allocation of each run, then the figure of
    both runs' image share per layer."""
    out, allocations = demo.out, {}
    for name, result in demo.results.items():
        started = time.perf_counter()
        loaded = run_from_result(result)
        ev = evaluate_run(
            loaded,
            out / "runs" / name / "eval",
            num_understanding=eval_understanding,
            num_generation=eval_generation,
        )
        grid = out / f"samples_{name}.png"
        if ev.get("sample_grid"):
            shutil.copyfile(ev["sample_grid"], grid)
            demo.files[f"samples_{name}"] = grid.name
        entry = demo.runs[name]
        entry["understanding"] = ev.get("understanding")
        entry["generation"] = ev.get("generation")
        entry["eval_time_s"] = ev["understanding_time_s"] + ev["generation_time_s"]
        alloc = analyze_run(
            loaded,
            out / "allocation" / name,
            samples=probe_samples,
            title=f"{name} ({_ALLOC_LABEL[name]}): attention share per key segment",
        )
        for key, path in alloc.pop("files").items():
            demo.files[f"allocation_{name}_{key}"] = str(Path(path).relative_to(out))
        allocations[name] = alloc
        entry["allocation"] = allocation_digest(alloc)
        demo.say(f"evaluated and probed {name} in {time.perf_counter() - started:.1f}s")
    shares = out / "allocation" / "image_share_per_layer.png"
    plot_image_share(allocations, shares)
    demo.files["image_share"] = str(shares.relative_to(out))


def _compare(demo: _Demo, shape: DecoderShape) -> dict[str, Any]:
    """The reduced run against the baseline: cost-model FLOPs on the real training layouts,
    measured step-time and throughput ratios."""
    base_data = demo.results["baseline"].data
    policies = demo.results["reduced"].handle.policies
    flops = plan_flops(base_data, policies, shape, demo.configs["reduced"], min(demo.steps, 50))
    b, r = demo.runs["baseline"]["train"], demo.runs["reduced"]["train"]
    return {
        "flops": flops,
        "step_time_ratio": (
            (r["step_time_s"] / b["step_time_s"]) if b["step_time_s"] and r["step_time_s"] else None
        ),
        "tokens_per_s_ratio": (
            r["tokens_per_s"] / b["tokens_per_s"] if b["tokens_per_s"] else None
        ),
    }


def _metrics(demo: _Demo, same: bool) -> dict[str, Any]:
    """metrics.json: every number of the report."""
    base = demo.results["baseline"]
    shape = DecoderShape.from_hf_config(
        base.built.base.config.to_dict(), source="tiny unified model"
    )
    comparison = _compare(demo, shape)
    startup = demo.age if demo.age is not None else 0.0
    return {
        "format": "tokred-demo",
        "version": 1,
        "wall_time_s": time.perf_counter() - demo.t0 + startup,
        "startup_time_s": demo.age,
        "demo_time_s": time.perf_counter() - demo.t0,
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": demo.threads,
            "load_average_at_start": demo.load_start,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "setup": {
            "steps": demo.steps,
            "config": {
                "base": demo_recipe(),
                "reduction": DEMO_REDUCTION,
                "overrides": demo.overrides,
            },
            "data": base.data.info,
            "decoder_shape": shape.to_dict(),
            "tokens_per_image": base.vq.num_tokens_per_image,
            "vocab_size": base.vocab.vocab_size,
            "same_vocab_and_vq": same,
        },
        "runs": demo.runs,
        "comparison": comparison,
        "above_chance": above_chance(demo.runs),
        "files": {**demo.files, "report": "report.md", "metrics": "metrics.json"},
    }


def run_demo(
    out: Path,
    steps: int | None = None,
    threads: int = 0,
    eval_understanding: int | None = None,
    eval_generation: int | None = None,
    probe_samples: int = 32,
    overrides: list[str] | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """The whole demo into `out` (`steps` per run: default the recipe's optim.max_steps;
    `threads` 0: pick from the machine's load; `out` must be absent, empty or an earlier
    demo's, or any folder with `force`); returns metrics.json's content."""
    demo = _prepare(out, steps, threads, probe_samples, overrides, force)
    complete = False
    try:  # the marker lists what was written even when a step fails or is interrupted
        same = _train_both(demo)
        _evaluate_and_probe(demo, eval_understanding, eval_generation, probe_samples)
        metrics = _metrics(demo, same)
        # Atomic: an interrupted demo never leaves a half-written report behind.
        atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=1, default=str) + "\n")
        atomic_write_text(out / "report.md", report.render_report(metrics))
        complete = True
    finally:
        record_files(out, complete)
    demo.say(f"wrote {out / 'report.md'} and {out / 'metrics.json'}")
    return metrics
