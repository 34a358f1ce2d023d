"""`tokred demo`: the embedded default end to end, in a few minutes on a laptop CPU.

1. Builds the embedded shapes data (one or two shapes per image; validation scenes are
   held out, never drawn in training), fits the patch VQ tokenizer and the unified
   vocabulary (deterministic: both runs get the very same ones).
2. Trains the tiny unified model twice from the same seed: without reduction (baseline),
   and with HiMix for understanding + HMGen for generation (separate image projections
   per task, the paper's "share partial").
3. Evaluates both on the held-out split (scenes never seen in training): understanding
   exact match per question type and generation checked by the shapes detector, each
   against its chance level; the reduced run is evaluated under its own reduction.
4. Runs the attention-allocation probe (the paper's Figure 3) on both, prices both runs'
   plans with the cost model on the real training layouts, and compares measured step
   times.
5. Writes into --out (default ./tokred-demo): report.md, metrics.json, the allocation
   figures, the sample grids, and the two run folders (runs/baseline, runs/reduced), which
   `tokred eval` and `tokred analyze` can read again.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from tokred_core import TokredError

from . import Command

__all__ = [
    "COMMAND",
    "DEMO_BASE_CONFIG",
    "DEMO_REDUCTION",
    "DEMO_STEPS",
    "demo_config",
    "plan_flops",
    "run_demo",
]

#: Training steps of each run by default: the baseline is clearly above chance on every
#: question type and on generation, and the whole demo stays under 5 minutes on a 2-core
#: CPU with 1 torch thread (measured 269 s; 600 steps left the baseline's kind questions
#: at chance, 800 took 300 s).
DEMO_STEPS = 700

#: The embedded default. 32x32 images in 8x8 patches: 16 image tokens, and the 97
#: distinct patches of the shapes set fit a 128-entry codebook exactly (lossless VQ,
#: so the detector judges the model, not the tokenizer; a patch lies in one grid cell, so
#: this holds for several shapes per image too).
#: Up to two shapes per image: with one (96 distinct images) both runs scored 100% on
#: both tasks, so accuracy could not tell them apart; with two, validation asks for
#: unseen combinations of seen shapes, questions must find the right cell and the count
#: question has two answers.
#: Batches of 16: at about the same time per sample as 32, the extra updates lift held-out
#: understanding (400 steps of 32 left it at the majority answer, 800 of 16 did not).
DEMO_BASE_CONFIG: dict[str, Any] = {
    "model": {
        "kind": "tiny",
        "hidden_size": 128,
        "intermediate_size": 344,
        "num_layers": 4,
        "num_heads": 4,
        "num_kv_heads": 2,
    },
    "data": {
        "kind": "shapes",
        "num_train": 1000,
        "num_val": 100,
        "image_size": 32,
        "patch_size": 8,
        "codebook_size": 128,
        "max_shapes": 2,
        "understanding_ratio": 0.5,
        "seed": 0,
    },
    "optim": {"lr": 1e-3, "batch_size": 16, "max_steps": DEMO_STEPS, "warmup_steps": 20},
    "run": {"seed": 0, "progress": False, "tensorboard": False, "log_every": 25},
    "eval": {"at_end": True, "max_samples": 64},
}

#: The reduced run: HiMix (understanding) + HMGen (generation), one image Q/K/V set per task.
DEMO_REDUCTION: dict[str, Any] = {
    "understanding": {"policy": "himix"},
    "generation": {"policy": "hmgen", "options": {"num_shallow": 1}},
    "sharing": "task",
}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="tokred-demo", metavar="DIR", help="default ./tokred-demo")
    parser.add_argument(
        "--steps",
        type=int,
        default=DEMO_STEPS,
        metavar="N",
        help=f"training steps per run (default {DEMO_STEPS})",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        metavar="N",
        help="torch CPU threads (default 0: all cores when the machine is idle, 1 when it is busy)",
    )
    parser.add_argument(
        "--eval-understanding",
        type=int,
        default=None,
        metavar="N",
        help="questions to score per run (default: the whole validation split)",
    )
    parser.add_argument(
        "--eval-generation",
        type=int,
        default=None,
        metavar="N",
        help="captions to draw per run (default: the whole validation split)",
    )
    parser.add_argument(
        "--probe-samples",
        type=int,
        default=32,
        metavar="N",
        help="samples per task for the allocation probe",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override the embedded default for both runs, e.g. optim.lr=1e-3 (repeatable)",
    )


def demo_config(out: Path, name: str, steps: int, reduced: bool, overrides: list[str]):
    """The checked TrainConfig of one demo run."""
    from tokred_train import load_config

    raw = json.loads(json.dumps(DEMO_BASE_CONFIG))
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


def _clear_run_dir(path: Path) -> None:
    if not path.exists():
        return
    if not (path / "config.yaml").is_file() and any(path.iterdir()):
        raise TokredError(
            f"{path} exists and is not a tokred run folder; choose another --out or remove it"
        )
    shutil.rmtree(path)


def plan_flops(data: Any, policies: Any, shape: Any, cfg: Any, num_batches: int) -> dict[str, Any]:
    """Cost-model FLOPs of `policies` vs none on the first training micro-batches (the
    layouts the runs really trained on), overall and per task, both conventions."""
    from tokred_core import Task, TaskPolicies, plan_cost
    from tokred_train import MixedBatchSampler

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


def _say(message: str, t0: float) -> None:
    print(f"[{time.perf_counter() - t0:6.1f}s] {message}", flush=True)


def run_demo(
    out: Path,
    steps: int = DEMO_STEPS,
    threads: int = 0,
    eval_understanding: int | None = None,
    eval_generation: int | None = None,
    probe_samples: int = 32,
    overrides: list[str] | None = None,
) -> dict[str, Any]:
    """The whole demo; returns metrics.json's content."""
    import platform

    import torch
    from tokred_core import DecoderShape
    from tokred_train import train
    from tokred_train.eval.run import evaluate_run, run_from_result

    from .. import report
    from ..figures import plot_image_share
    from .analyze import analyze_run, describe_policies

    if steps < 1:
        raise TokredError(f"--steps {steps}: need at least 1 training step")
    if probe_samples < 1:
        raise TokredError(f"--probe-samples {probe_samples}: need at least 1")
    t0 = time.perf_counter()
    age = _process_age()
    startup = age if age is not None else 0.0
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    n_threads = threads if threads > 0 else _auto_threads()
    torch.set_num_threads(n_threads)
    out.mkdir(parents=True, exist_ok=True)
    overrides = list(overrides or [])
    configs = {
        "baseline": demo_config(out, "baseline", steps, False, overrides),
        "reduced": demo_config(out, "reduced", steps, True, overrides),
    }
    for name in configs:
        _clear_run_dir(out / "runs" / name)
    _say(f"tokred demo into {out} ({steps} steps per run, {n_threads} torch threads)", t0)

    results: dict[str, Any] = {}
    runs: dict[str, dict[str, Any]] = {}
    for name, cfg in configs.items():
        started = time.perf_counter()
        results[name] = train(cfg)
        s = results[name].summary
        runs[name] = {
            "policies": describe_policies(results[name].handle.policies),
            "sharing": s.get("sharing"),
            "train": {
                k: s.get(k)
                for k in (
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
            },
            "final": s.get("final", {}),
            "loss_curve": [
                {
                    "step": h["step"],
                    "loss": h["loss"],
                    "loss_understanding": h["loss_understanding"],
                    "loss_generation": h["loss_generation"],
                }
                for h in results[name].history
            ],
            "run_dir": str(results[name].run_dir),
        }
        _say(
            f"trained {name} in {time.perf_counter() - started:.1f}s "
            f"(step {s.get('step_time_s', 0):.3f}s, final loss {s.get('final', {}).get('loss', float('nan')):.3f})",
            t0,
        )
    base_data = results["baseline"].data
    same = results["baseline"].vocab == results["reduced"].vocab and bool(
        (results["baseline"].vq.codebook == results["reduced"].vq.codebook).all()
    )
    if not same:  # the data pipeline is deterministic; a difference is a bug worth stopping on
        raise TokredError("the two demo runs built different vocabularies or VQ codebooks")

    alloc_label = {"baseline": "no reduction", "reduced": "HiMix + HMGen"}
    files: dict[str, str] = {}
    allocations: dict[str, dict[str, Any]] = {}
    for name, result in results.items():
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
            files[f"samples_{name}"] = grid.name
        runs[name]["understanding"] = ev.get("understanding")
        runs[name]["generation"] = ev.get("generation")
        runs[name]["eval_time_s"] = ev["understanding_time_s"] + ev["generation_time_s"]
        alloc_dir = out / "allocation" / name
        alloc = analyze_run(
            loaded,
            alloc_dir,
            samples=probe_samples,
            title=f"{name} ({alloc_label[name]}): attention share per key segment",
        )
        for key, path in alloc.pop("files").items():
            files[f"allocation_{name}_{key}"] = str(Path(path).relative_to(out))
        allocations[name] = alloc
        runs[name]["allocation"] = report.allocation_digest(alloc)
        _say(f"evaluated and probed {name} in {time.perf_counter() - started:.1f}s", t0)
    shares = out / "allocation" / "image_share_per_layer.png"
    plot_image_share(allocations, shares)
    files["image_share"] = str(shares.relative_to(out))

    model = results["baseline"].built.base
    shape = DecoderShape.from_hf_config(model.config.to_dict(), source="tiny unified model")
    cfg = configs["reduced"]
    flops = plan_flops(base_data, results["reduced"].handle.policies, shape, cfg, min(steps, 50))
    b_time = runs["baseline"]["train"]["step_time_s"]
    r_time = runs["reduced"]["train"]["step_time_s"]
    comparison = {
        "flops": flops,
        "step_time_ratio": (r_time / b_time) if b_time and r_time else None,
        "tokens_per_s_ratio": (
            runs["reduced"]["train"]["tokens_per_s"] / runs["baseline"]["train"]["tokens_per_s"]
            if runs["baseline"]["train"]["tokens_per_s"]
            else None
        ),
    }
    wall = time.perf_counter() - t0 + startup
    metrics: dict[str, Any] = {
        "format": "tokred-demo",
        "version": 1,
        "wall_time_s": wall,
        "startup_time_s": age,
        "demo_time_s": time.perf_counter() - t0,
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": n_threads,
            "load_average_at_start": load_start,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "setup": {
            "steps": steps,
            "config": {
                "base": DEMO_BASE_CONFIG,
                "reduction": DEMO_REDUCTION,
                "overrides": overrides,
            },
            "data": results["baseline"].data.info,
            "decoder_shape": shape.to_dict(),
            "tokens_per_image": results["baseline"].vq.num_tokens_per_image,
            "vocab_size": results["baseline"].vocab.vocab_size,
            "same_vocab_and_vq": same,
        },
        "runs": runs,
        "comparison": comparison,
        "above_chance": report.above_chance(runs),
        "files": files,
    }
    metrics["files"]["report"] = "report.md"
    metrics["files"]["metrics"] = "metrics.json"
    # Atomic: an interrupted demo never leaves a half-written report behind.
    from tokred_train.atomic import atomic_write_text

    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=1, default=str) + "\n")
    atomic_write_text(out / "report.md", report.render_report(metrics))
    _say(f"wrote {out / 'report.md'} and {out / 'metrics.json'}", t0)
    return metrics


def run(args: argparse.Namespace) -> int:
    metrics = run_demo(
        Path(args.out),
        steps=args.steps,
        threads=args.threads,
        eval_understanding=args.eval_understanding,
        eval_generation=args.eval_generation,
        probe_samples=args.probe_samples,
        overrides=args.overrides,
    )
    from .. import report

    print(report.render_summary(metrics))
    return 0


COMMAND = Command(
    name="demo",
    help="train, evaluate and diagnose the embedded tiny model with and without reduction",
    description=__doc__,
    configure=configure,
    run=run,
)
