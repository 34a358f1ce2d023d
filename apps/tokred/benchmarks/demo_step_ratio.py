"""The demo's two training runs stepped side by side: baseline and reduced step times,
interleaved step by step in one process (which run goes first alternates), so that a
shared, noisy machine slows both alike.

    OMP_NUM_THREADS=1 uv run python apps/tokred/benchmarks/demo_step_ratio.py [--steps 60]

Each run is the demo's own recipe (tokred.demo_run.demo_config) with its own data,
sampler and plan; the time is `Trainer.train_step` (forward, backward, clipping, the
optimizer), not the batch's collation or planning. The first --skip steps are warm-up.
Prints the median step times and the median of the per-step ratios (reduced / baseline).
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
        times: dict[str, list[float]] = {name: [] for name in trainers}
        for step in range(1, args.steps + 1):
            order = list(trainers) if step % 2 else list(reversed(trainers))
            for name in order:
                trainer, s = trainers[name], trainers[name].setup
                tasks = trainer.config.data.train_tasks
                micros = micro_batch(s.data, s.sampler, step - 1, tasks, trainer.planner)
                start = time.perf_counter()
                trainer.train_step(step, micros)
                times[name].append(time.perf_counter() - start)
    base, red = (times[name][args.skip :] for name in ("baseline", "reduced"))
    ratios = [r / b for b, r in zip(base, red, strict=True)]
    q = statistics.quantiles(ratios, n=4)
    print(
        f"baseline {statistics.median(base) * 1e3:.1f} ms/step, reduced "
        f"{statistics.median(red) * 1e3:.1f} ms/step, ratio {statistics.median(ratios):.3f} "
        f"[IQR {q[0]:.3f}-{q[2]:.3f}] over {len(ratios)} steps, {args.threads} thread(s)"
    )


if __name__ == "__main__":
    main()
