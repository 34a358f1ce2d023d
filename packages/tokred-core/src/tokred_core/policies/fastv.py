"""`fastv`: keep the most attended image tokens from layer K on (Chen et al., FastV).

Inside layer K-1 the attention from the chosen prompt queries ranks the image tokens; the
top `keep_ratio` stay and the rest are DROPPED from layer K on. The ranking comes from the
kernels' importance op (queries and keys recomputed in the layer), not eager attention.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..errors import TokredError
from ..layout import Task, TokenLayout
from ..plans import ReductionPlan, Selection, _check_ratio
from .base import Policy, PolicyConfig, check_layer, register_policy, require_image_tokens
from .selection import importance_queries

__all__ = ["FastV", "FastVConfig"]


@dataclass
class FastVConfig(PolicyConfig):
    layer: int = 2
    """K: the first layer that runs without the dropped image tokens (scored in K-1)."""
    keep_ratio: float = 0.5
    """Fraction of image tokens kept."""
    query: Literal["last_instruction", "prompt"] = "last_instruction"
    """Which queries rank the image tokens: the last instruction token or all prompt text."""

    def __post_init__(self) -> None:
        if self.layer < 1:
            raise TokredError(f"fastv layer={self.layer} must be >= 1 (it is scored in layer K-1)")
        _check_ratio("fastv keep_ratio", self.keep_ratio)
        if self.query not in ("last_instruction", "prompt"):
            raise TokredError(f"fastv query={self.query!r} must be 'last_instruction' or 'prompt'")


@register_policy
class FastV(Policy):
    name = "fastv"
    config_class = FastVConfig
    # Dropping generation outputs would drop the tokens that carry its loss.
    tasks = frozenset({Task.UNDERSTANDING})

    def _plan(self, layout: TokenLayout, num_layers: int) -> ReductionPlan:
        check_layer(self.config.layer, num_layers, "fastv layer", low=1)
        image = require_image_tokens(layout, self.name)
        queries = importance_queries(layout, self.config.query)
        roles = ReductionPlan.full(
            num_layers, layout.batch_size, layout.seq_len, layout.device
        ).roles
        selection = Selection(self.config.layer - 1, image, queries, self.config.keep_ratio)
        return ReductionPlan(roles, (selection,))
