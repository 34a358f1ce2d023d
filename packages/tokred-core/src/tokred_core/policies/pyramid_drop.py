"""`pyramid_drop`: staged image-token drops (Xing et al., PyramidDrop).

The stack is cut into stages; at each stage boundary b the image tokens still present are
ranked by attention from the last instruction token inside layer b-1 and only `keep_ratio`
of them go on. Default boundaries cut the stack into four equal stages, as the paper does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..errors import TokredError
from ..layout import Task, TokenLayout
from ..plans import ReductionPlan, Selection, _check_ratio
from .base import Policy, PolicyConfig, check_layer, register_policy, require_image_tokens
from .selection import importance_queries

__all__ = ["PyramidDrop", "PyramidDropConfig"]


@dataclass
class PyramidDropConfig(PolicyConfig):
    boundaries: list[int] | None = None
    """First layer of each new stage; default: quarters of the stack."""
    keep_ratio: float = 0.5
    """Fraction of the remaining image tokens kept at each boundary."""
    query: Literal["last_instruction", "prompt"] = "last_instruction"
    """Which queries rank the image tokens."""

    def __post_init__(self) -> None:
        _check_ratio("pyramid_drop keep_ratio", self.keep_ratio)
        if self.boundaries is not None and sorted(set(self.boundaries)) != list(self.boundaries):
            raise TokredError(
                f"pyramid_drop boundaries={self.boundaries} must be strictly increasing"
            )


@register_policy
class PyramidDrop(Policy):
    name = "pyramid_drop"
    config_class = PyramidDropConfig
    tasks = frozenset({Task.UNDERSTANDING})

    def boundaries(self, num_layers: int) -> list[int]:
        if self.config.boundaries is not None:
            for b in self.config.boundaries:
                check_layer(b, num_layers, "pyramid_drop boundary", low=1)
            return list(self.config.boundaries)
        return sorted({num_layers * i // 4 for i in (1, 2, 3)} - {0})

    def _plan(self, layout: TokenLayout, num_layers: int) -> ReductionPlan:
        image = require_image_tokens(layout, self.name)
        queries = importance_queries(layout, self.config.query)
        roles = ReductionPlan.full(
            num_layers, layout.batch_size, layout.seq_len, layout.device
        ).roles
        selections = tuple(
            Selection(b - 1, image, queries, self.config.keep_ratio)
            for b in self.boundaries(num_layers)
        )
        return ReductionPlan(roles, selections)
