"""Micro-batch m of a run's mixed stream, as the training step takes it: collated, its
loss targets found on the host, its reduction prepared on the host (in the prefetch
thread when there is one), so the step itself never plans or synchronises."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..data.training_data import TrainData
from .full_steps import StepPlanner
from .sampler import MixedBatchSampler
from .step import BatchTargets, batch_targets

__all__ = ["MicroBatch", "micro_batch"]

#: One micro-batch as the step takes it: the collated batch, its loss targets, and the
#: sample indices it holds by task (None: the micro-batch holds no sample of a trained task).
MicroBatch = tuple[dict[str, Any], BatchTargets, dict[str, list[int]]] | None


def micro_batch(
    data: TrainData,
    sampler: MixedBatchSampler,
    micro: int,
    tasks: Sequence[str],
    planner: StepPlanner | None = None,
    split: bool = False,
) -> list[MicroBatch]:
    """Micro-batch `micro` of the mixed stream, keeping the samples of `tasks` only, with
    its reduction plan and schedule prepared on the host (in the prefetch thread when
    there is one) when `planner` is given. One entry; with `split`, one per task of
    `tasks` in order (gradient surgery needs each task's gradient)."""
    drawn = {task: idx for task, idx in sampler.draw(micro).items() if task in tasks}
    groups = [{t: drawn[t]} for t in tasks] if split else [drawn]  # draw names every task
    out: list[MicroBatch] = []
    for parts in groups:
        if not any(len(idx) for idx in parts.values()):
            out.append(None)
            continue
        batch = data.collate(parts)
        if planner is not None:
            planner.prepare(batch, micro)
        targets = batch_targets(batch, data.loss_path)
        out.append((batch, targets, {t: i.tolist() for t, i in parts.items()}))
    return out
