"""The forward and backward passes of one optimizer step's micro-batches.

Plain: gradients accumulate in `.grad` over the micro-batches, and under DDP they are
reduced across the ranks in the last backward only. With gradient surgery (surgery.py) a
micro-batch arrives as one sub-batch per trained task, each task's gradient is kept apart
(and averaged across the ranks by the surgery, not by DDP), and the combined gradient is
written into `.grad` at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import nn

from .sharding import gradient_sync
from .step import BatchTargets
from .surgery import PCGrad

__all__ = ["Run", "backward_micro_batches"]

#: One forward and backward: the collated batch, its targets, the weight of its loss (0:
#: a stand-in that a rank runs to keep the ranks' collectives in step).
Run = tuple[dict[str, Any], BatchTargets, float]


def backward_micro_batches(
    trained: nn.Module,
    runs: Sequence[Run],
    scale: torch.Tensor | float,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager[Any]],
    distributed: bool,
    surgery: PCGrad | None = None,
) -> tuple[torch.Tensor, int, int]:
    """Run every micro-batch's forward and backward; returns the summed cross-entropy per
    task (2,) on the device, and the tokens and samples trained (the weighted runs).

    With `surgery`, every run is a sub-batch of one task (micro_batch's split), whose
    gradient goes to that task's buffer (a stand-in at weight 0 adds zeros to either)."""
    sums = torch.zeros(2, dtype=torch.float32, device=device)
    tokens = samples = 0
    for i, (batch, targets, weight) in enumerate(runs):
        last = surgery is None and i == len(runs) - 1
        with gradient_sync(trained, distributed, last):
            with autocast():
                part = trained(batch, targets.to(device))
            # part[2:], when there, is the distillation term (step.py): trained, not logged.
            (part.sum() * (scale * weight)).backward()
        if surgery is not None:
            surgery.stash(0 if targets.counts[0] else 1)
        if weight:
            sums += part[:2].detach()
            tokens += int(batch["attention_mask"].sum())
            samples += batch["input_ids"].shape[0]
    if surgery is not None:
        surgery.apply()
    return sums, tokens, samples
