"""Per-forward execution state shared by the reduced layers of one model call.

Created once per forward from the layout (patch.py) and handed to every decoder layer
through the layer kwargs, so that gradient-checkpoint recomputation, which replays the
layer call with the same kwargs, sees the very same object: the same roles, the same
layer-0 embeddings, and selections already made are not made again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from tokred_core import ReductionPlan, TokenLayout

from .schedule import StepSchedule

__all__ = ["ExecutionState", "PreparedStep", "ProbeCallback"]

# probe(state, layer_idx, q (B,H,Nq,D), k (B,Hkv,Nk,D), q_tokens (B,Nq) long, k_tokens (B,Nk) long,
#       q_valid (B,Nq) bool, k_valid (B,Nk) bool, *, window, scale) -> None
ProbeCallback = Callable[..., None]


@dataclass(frozen=True)
class PreparedStep:
    """What `ReductionHandle.prepare` builds for one batch before its forward: the layout
    and plan on the model's device, and the step's schedule. Passed as `tokred_layout`,
    it is reused by every forward over that batch (each gets its own ExecutionState)."""

    layout: TokenLayout
    plan: ReductionPlan
    schedule: StepSchedule
    checked_mask: torch.Tensor | None = None
    """The (B, N) attention mask (CPU) the layout was checked against when prepared."""
    routes: dict = field(default_factory=dict)
    """{routed layer: routing.RouteSet}, the candidates of the router policy's layers."""


@dataclass
class ExecutionState:
    layout: TokenLayout
    plan: ReductionPlan
    schedule: StepSchedule
    """Per layer, its token sets and attention buckets (schedule.py)."""
    embeddings: torch.Tensor | None = None
    """Input of layer 0, the source of INJECT keys/values at every layer."""
    selected_layers: set[int] = field(default_factory=set)
    routes: dict = field(default_factory=dict)
    """{routed layer: routing.RouteSet} (the prepared step's)."""
    routed_layers: set[int] = field(default_factory=set)
    """Routed layers whose picks are made (once per forward, not again on recompute)."""
    probe: ProbeCallback | None = None
    probed_layers: set[int] = field(default_factory=set)
    pack_runs: bool = True
    """Keep the ACTIVE tokens packed through a run of layers with one pattern."""
    carried: tuple[torch.Tensor, torch.Tensor] | None = None
    """Inside a run: (the full hidden states at its start, the packed ACTIVE rows now)."""
    rope_rows: dict = field(default_factory=dict)
    """cos/sin gathered at each pattern's rows, once per forward (reduced_layer.py)."""

    @property
    def roles(self) -> torch.Tensor:
        return self.plan.roles
