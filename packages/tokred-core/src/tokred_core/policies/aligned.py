"""`aligned`: both tasks' image tokens leave the same band of layers (issue 10, aligned
pathways).

The paper's hypothesis for the synergy that HiMix + HMGen lose (PAPER.md section 4) is
that the two tasks come to use divergent pathways: HiMix skips understanding's image
tokens from layer 0 on, HMGen generation's in a few scattered middle layers, so their
gradients meet in different places. This policy names one band [start_layer, end_layer)
for both: there understanding's image tokens are INJECT (keys/values only, as HiMix, so
the text still reads the image) and generation's BYPASS (as an HMGen shallow layer); every
other layer is full for both. Named on both tasks with the same band, with the `aligned`
sharing mode (tokred_core.alignment), the two tasks share image projections wherever
their plans coincide.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import TokredError
from ..layout import Task, TokenLayout
from ..plans import ReductionPlan
from ..roles import Role
from .base import Policy, PolicyConfig, check_layer, register_policy, require_image_tokens

__all__ = ["Aligned", "AlignedConfig", "aligned_band"]


@dataclass
class AlignedConfig(PolicyConfig):
    start_layer: int = 2
    """First layer of the band in which image tokens are reduced."""
    end_layer: int | None = None
    """One past the band's last layer; null: the last layer (which stays full)."""

    def __post_init__(self) -> None:
        if self.start_layer < 0:
            raise TokredError(f"aligned start_layer={self.start_layer} must be >= 0")
        if self.end_layer is not None and self.end_layer <= self.start_layer:
            raise TokredError(
                f"aligned end_layer={self.end_layer} must be above start_layer={self.start_layer}"
            )


def aligned_band(config: AlignedConfig, num_layers: int) -> range:
    """The reduced layers of the band in a stack of `num_layers`."""
    check_layer(config.start_layer, num_layers, "aligned start_layer")
    end = num_layers - 1 if config.end_layer is None else config.end_layer
    if end > num_layers:
        raise TokredError(
            f"aligned end_layer={end} is past the last layer of a {num_layers}-layer model"
        )
    if end <= config.start_layer:
        raise TokredError(
            f"aligned start_layer={config.start_layer} leaves no band before the last layer "
            f"of a {num_layers}-layer model (set end_layer)"
        )
    return range(config.start_layer, end)


@register_policy
class Aligned(Policy):
    name = "aligned"
    config_class = AlignedConfig

    def _plan(self, layout: TokenLayout, num_layers: int) -> ReductionPlan:
        band = aligned_band(self.config, num_layers)
        image = require_image_tokens(layout, self.name)
        plan = ReductionPlan.full(num_layers, layout.batch_size, layout.seq_len, layout.device)
        understanding = (layout.tasks == Task.UNDERSTANDING)[:, None]
        roles = plan.roles[band.start : band.stop]
        roles.masked_fill_((image & understanding)[None], int(Role.INJECT))
        roles.masked_fill_((image & ~understanding)[None], int(Role.BYPASS))
        return plan
