"""The guard against non-finite steps (run.on_nonfinite).

Why: a too high learning rate or an overflow turns the gradient norm into inf or NaN, and
one such update makes every weight NaN from then on: the run would go on for hours and
write NaN checkpoints. The guard looks at the gradient norm before each update (a NaN or
inf loss gives one too). It is taken after DDP averaged the gradients, so every rank
decides the same. Checking costs one host sync per optimizer step, the price of never
writing a NaN weight.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from tokred_core import TokredError

__all__ = ["NonFiniteGuard"]


class NonFiniteGuard:
    """`allows(step, grad_norm)`: whether to apply the step's update. On a non-finite norm,
    'stop' raises one line naming the step and the last good checkpoint (after `before_stop`,
    e.g. flushing the good steps' metrics); 'skip_step' counts the step in `skipped` and
    clears the gradients."""

    def __init__(
        self,
        policy: str,
        optimizer: torch.optim.Optimizer,
        last_checkpoint: Callable[[], Path | None],
        before_stop: Callable[[], None] = lambda: None,
    ) -> None:
        self.policy = policy
        self.optimizer = optimizer
        self.last_checkpoint = last_checkpoint
        self.before_stop = before_stop
        self.skipped = 0

    def allows(self, step: int, grad_norm: torch.Tensor) -> bool:
        if bool(torch.isfinite(grad_norm)):
            return True
        if self.policy == "skip_step":
            self.skipped += 1
            self.optimizer.zero_grad(set_to_none=True)
            return False
        self.before_stop()
        good = self.last_checkpoint() or "none written yet"
        raise TokredError(
            f"step {step}: the gradient norm is {float(grad_norm)} (not finite), so training "
            f"stopped before the update; last good checkpoint: {good}. Lower optim.lr, or set "
            "run.on_nonfinite=skip_step to drop such steps"
        )
