"""Mixed full-token steps (strategy.full_steps, strategy.distill): which steps of a run
skip the reduction, and the plans each micro-batch of a step runs.

Why evenly spaced steps, not a coin per step: the fraction is then exact over any window
of 1/p steps, the same steps are full in every arm of a study and after a resume, and the
cost model counts them from the step index alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

from tokred_core import TaskPolicies
from tokred_models import ReductionHandle

from ..config.strategy import StrategyConfig
from .step import DISTILL_KEY, PREPARED_KEY

__all__ = ["FULL_LAYERS_KEY", "StepPlanner", "is_full_step"]

#: The gated full layers a batch was prepared with (see StepPlanner.refresh).
FULL_LAYERS_KEY = "tokred_full_layers"


def is_full_step(step: int, fraction: float) -> bool:
    """Whether optimizer step `step` (1-based) runs unreduced: step s is full when
    floor(s p) > floor((s - 1) p), so the first k steps hold floor(k p) full ones."""
    if fraction <= 0:
        return False
    p = Fraction(str(fraction))  # exact decimal: 0.1 * 30 is 3, not 3.0000000000000004
    return math.floor(step * p) != math.floor((step - 1) * p)


class StepPlanner:
    """Prepares each micro-batch's reduction on the host (ReductionHandle.prepare), as
    the run's strategy says: the unreduced plan on a full step, plus the reduced one when
    it distils; the reduced plan otherwise, with the gate's full layers."""

    def __init__(self, handle: ReductionHandle, strategy: StrategyConfig, grad_accum: int):
        self.handle = handle
        self.strategy = strategy
        self.grad_accum = grad_accum
        self.full_layers: tuple[int, ...] = ()
        """Layers the conflict gate runs in full (strategy.gate_threshold); set by the loop."""

    def step_of(self, micro: int) -> int:
        return micro // self.grad_accum + 1

    def prepare(self, batch: dict[str, Any], micro: int) -> None:
        """Put the prepared step(s) of micro-batch `micro` into `batch`."""
        layout, mask = batch["layout"], batch["attention_mask"]
        full_layers = self.full_layers

        def reduced():
            return self.handle.prepare(layout, mask, full_layers=full_layers)

        if is_full_step(self.step_of(micro), self.strategy.full_steps):
            batch[PREPARED_KEY] = self.handle.prepare(layout, mask, policies=TaskPolicies())
            if self.strategy.distill:
                batch[DISTILL_KEY] = reduced()
        else:
            batch[PREPARED_KEY] = reduced()
        batch[FULL_LAYERS_KEY] = full_layers

    def refresh(self, batches: Sequence[tuple[dict[str, Any], int]]) -> None:
        """Prepare again the (batch, micro) a prefetch thread prepared before the gate last
        changed, so that every step runs the gate as it stood when the step began."""
        for batch, micro in batches:
            if batch.get(FULL_LAYERS_KEY, ()) != self.full_layers:
                batch.pop(DISTILL_KEY, None)
                self.prepare(batch, micro)
