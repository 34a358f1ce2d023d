"""`none`: every token ACTIVE in every layer; the baseline every ratio is taken against."""

from __future__ import annotations

from ..layout import TokenLayout
from ..plans import ReductionPlan
from .base import Policy, register_policy

__all__ = ["NoReduction"]


@register_policy
class NoReduction(Policy):
    name = "none"

    def _plan(self, layout: TokenLayout, num_layers: int) -> ReductionPlan:
        return ReductionPlan.full(num_layers, layout.batch_size, layout.seq_len, layout.device)
