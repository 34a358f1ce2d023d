"""Validation loss per task on the held-out samples, under the run's reduction plans.

The same forward and loss as training (train_step.py), in eval mode and without gradients:
the token-mean cross-entropy over each task's targets on the first eval.max_samples
held-out samples of that task. Task metrics (VQA accuracy, the shapes detector) live in
`tokred eval`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn

from ..data.training_data import TrainData
from .step import TrainStep, batch_targets

__all__ = ["validation_loss"]


@torch.no_grad()
def validation_loss(
    model: nn.Module,
    data: TrainData,
    max_samples: int,
    batch_size: int,
    device: torch.device,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> dict[str, float]:
    """{'val_loss', 'val_loss_understanding', 'val_loss_generation'} (tasks without samples
    are left out; an empty validation split gives {}). `model`: a TrainStep, or a model
    run through the causal-LM path."""
    if not isinstance(model, TrainStep):
        model = TrainStep(model, data.loss_path)
    sums = torch.zeros(2, dtype=torch.float32, device=device)
    counts = [0, 0]
    was_training = model.training
    model.eval()
    try:
        for task, samples in data.val.items():
            n = min(max_samples, len(samples))
            for start in range(0, n, batch_size):
                idx = list(range(start, min(start + batch_size, n)))
                batch = data.collate({task: idx}, split="val")
                targets = batch_targets(batch, data.loss_path)
                with autocast():
                    sums += model(batch, targets.to(device))
                counts[0] += targets.counts[0]
                counts[1] += targets.counts[1]
    finally:
        model.train(was_training)
    if sum(counts) == 0:
        return {}
    values = sums.tolist()
    out = {"val_loss": (values[0] + values[1]) / sum(counts)}
    for i, task in enumerate(("understanding", "generation")):
        if counts[i]:
            out[f"val_loss_{task}"] = values[i] / counts[i]
    return out
