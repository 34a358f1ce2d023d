"""Synergy-aware training strategies (issue 10): how a reduced run keeps what joint
training gives, on top of the per-task policies of `reduction`.

    strategy.full_steps: 0.1      a tenth of the steps run without reduction (DualSpeed)
    strategy.distill: 1.0         on those steps, also the reduced pass, pulled to the full one
    strategy.surgery: pcgrad      project out the tasks' conflicting gradient components
    strategy.gate_threshold: 0.0  reduce a layer only while the tasks' gradients agree there

Each is off by default, and the default trains exactly as without this section.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from .coerce import config_error as _fail

__all__ = ["StrategyConfig", "SURGERIES"]

SURGERIES = ("none", "pcgrad")


@dataclass
class StrategyConfig:
    """What a run does beyond its per-task reduction to keep the tasks' synergy."""

    section: ClassVar[str] = "strategy"

    full_steps: float = 0.0
    """Fraction p of optimizer steps that run without any reduction (every sample full):
    step s is full when floor(s p) > floor((s - 1) p), evenly spaced and exact, the same
    in every arm and after a resume (run/full_steps.py). The rest run the reduction.
    0: every step reduced; 1: none."""
    distill: float = 0.0
    """Weight of self-distillation on the full steps: those steps also run the reduced pass
    on the same batch, and add distill x KL(full || reduced) over the target tokens (the
    full pass's distribution held fixed) to the full pass's cross-entropy. Needs
    full_steps > 0. 0: off."""
    distill_temperature: float = 1.0
    """Softmax temperature of both distributions in the distillation KL (scaled by T^2)."""
    surgery: Literal["none", "pcgrad"] = "none"
    """pcgrad: each micro-batch runs as one sub-batch per task, so the step has each task's
    gradient; where the two conflict (negative dot product over the trainable parameters)
    each loses its component along the other (Yu et al. 2020, PCGrad) before they are
    summed. The same FLOPs as the plain step; one more copy of the gradients in memory."""
    gate_threshold: float | None = None
    """Conflict-aware gating: at every run.conflict_every measurement, a layer whose
    tasks' adjusted gradient cosine falls below threshold - gate_hysteresis runs full from
    then on, and a full layer whose cosine rises above threshold + gate_hysteresis is
    reduced again. In [-1, 1]; null: off. Needs run.conflict_every > 0."""
    gate_hysteresis: float = 0.05
    """Half-width of the band around gate_threshold in which a layer keeps its state."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.full_steps <= 1.0:
            raise _fail("strategy.full_steps", f"{self.full_steps} is outside [0, 1]")
        if self.distill < 0:
            raise _fail("strategy.distill", f"{self.distill} must be >= 0")
        if self.distill > 0 and self.full_steps == 0:
            raise _fail(
                "strategy.distill",
                f"{self.distill} needs full steps to distil from (set strategy.full_steps > 0)",
            )
        if self.distill_temperature <= 0:
            raise _fail("strategy.distill_temperature", f"{self.distill_temperature} must be > 0")
        if self.surgery not in SURGERIES:
            raise _fail(
                "strategy.surgery", f"{self.surgery!r} must be one of {', '.join(SURGERIES)}"
            )
        if self.gate_threshold is not None and not -1.0 <= self.gate_threshold <= 1.0:
            raise _fail("strategy.gate_threshold", f"{self.gate_threshold} is outside [-1, 1]")
        if not 0.0 <= self.gate_hysteresis <= 1.0:
            raise _fail("strategy.gate_hysteresis", f"{self.gate_hysteresis} is outside [0, 1]")

    @property
    def enabled(self) -> bool:
        return bool(self.full_steps or self.surgery != "none" or self.gate_threshold is not None)
