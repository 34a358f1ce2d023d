"""The demo's two training runs stepped side by side: baseline and reduced step times,
interleaved step by step in one process (which run goes first alternates), so that a
shared, noisy machine slows both alike.

    OMP_NUM_THREADS=1 uv run python apps/tokred/benchmarks/demo_step_ratio.py [--steps 60]

Each run is the demo's own recipe (tokred.demo_run.demo_config) with its own data,
sampler and plan; the time is `Trainer.train_step` (forward, backward, clipping, the
optimizer), not the batch's collation or planning. The first --skip steps are warm-up.
Prints the median step times and the median of the per-step ratios (reduced / baseline).

--phases times the step's parts instead, each run's forward (the loss), backward, and
clipping plus optimizer step apart (a single micro-batch step, as the demo's recipe has),
and prints the same medians per part: where the reduced run gains or loses.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from tokred.demo_run import demo_config
from tokred_train.run.loop import Trainer
from tokred_train.run.micro_batch import micro_batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--skip", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--phases", action="store_true", help="time forward, backward, optimizer")
    args = parser.parse_args()
    if args.steps <= args.skip:
        parser.error(f"--steps {args.steps} must exceed --skip {args.skip}")
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {}
        for name in ("baseline", "reduced"):
            config = demo_config(
                Path(tmp), name, args.steps, name == "reduced", ["eval.at_end=false"]
            )
            trainers[name] = Trainer(config)
            trainers[name].setup.model.train()
        step = _phases if args.phases else _whole_step
        times: dict[str, dict[str, list[float]]] = {name: {} for name in trainers}
        for i in range(1, args.steps + 1):
            order = list(trainers) if i % 2 else list(reversed(trainers))
            for name in order:
                trainer, s = trainers[name], trainers[name].setup
                tasks = trainer.config.data.train_tasks
                micros = micro_batch(s.data, s.sampler, i - 1, tasks, trainer.planner)
                for part, seconds in step(trainer, i, micros).items():
                    times[name].setdefault(part, []).append(seconds)
    for part in times["baseline"]:
        base, red = (times[name][part][args.skip :] for name in ("baseline", "reduced"))
        ratios = [r / b for b, r in zip(base, red, strict=True)]
        q = statistics.quantiles(ratios, n=4)
        print(
            f"{part}: baseline {statistics.median(base) * 1e3:.1f} ms, reduced "
            f"{statistics.median(red) * 1e3:.1f} ms, ratio {statistics.median(ratios):.3f} "
            f"[IQR {q[0]:.3f}-{q[2]:.3f}] over {len(ratios)} steps, {args.threads} thread(s)"
        )


def _whole_step(trainer: Trainer, step: int, micros) -> dict[str, float]:
    start = time.perf_counter()
    trainer.train_step(step, micros)
    return {"step": time.perf_counter() - start}


def _phases(trainer: Trainer, step: int, micros) -> dict[str, float]:
    """The demo's one-micro-batch step in three timed parts: train_step's work for it,
    without its logging and its guard against non-finite gradient norms."""
    ((batch, targets, _),) = micros
    s = trainer.setup
    t0 = time.perf_counter()
    loss = s.trained(batch, targets.to(s.device)).sum() / max(sum(targets.counts), 1)
    t1 = time.perf_counter()
    loss.backward()
    t2 = time.perf_counter()
    torch.nn.utils.clip_grad_norm_(s.params, trainer.clip)
    s.optimizer.step()
    s.scheduler.step()
    s.optimizer.zero_grad(set_to_none=True)
    t3 = time.perf_counter()
    return {"forward": t1 - t0, "backward": t2 - t1, "optimizer": t3 - t2}


if __name__ == "__main__":
    main()
