"""Reduction plans: the role of every token at every layer, plus dynamic selections.

A static policy (HiMix, HMGen, random drop) knows every role before the forward pass. A
dynamic one (FastV, PyramidDrop) decides at a selection layer which candidate tokens to
keep, from attention importance computed in that layer; until then the candidates are
ACTIVE, afterwards the ones not kept are DROPPED. The plan records the static roles and the
selections; the executor (tokred-models) fills the selections in at run time on its own
copy, so that gradient-checkpoint recomputation replays the same decisions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .errors import TokredError
from .roles import Role

__all__ = ["Selection", "ReductionPlan", "keep_counts"]


def keep_counts(remaining: torch.Tensor, keep_ratio: float) -> torch.Tensor:
    """How many of `remaining` candidates a selection keeps: ceil(ratio * n), so any ratio
    above zero keeps at least one token of a sample that has one."""
    return torch.ceil(remaining.double() * keep_ratio - 1e-9).clamp(min=0).long()


@dataclass(frozen=True)
class Selection:
    """A dynamic drop.

    layer:      importance is scored inside this layer; unkept candidates are DROPPED from
                layer + 1 on.
    candidates: (B, N) bool, the tokens that may be dropped (intersected at run time with
                the tokens still ACTIVE in `layer`).
    queries:    (B, N) bool, the query positions whose attention scores the candidates.
    keep_ratio: fraction of the remaining candidates that is kept (see `keep_counts`).
    """

    layer: int
    candidates: torch.Tensor
    queries: torch.Tensor
    keep_ratio: float

    def restricted_to(self, rows: torch.Tensor) -> Selection:
        """The same selection applied only to the samples in the (B,) bool mask `rows`."""
        rows = rows[:, None]
        return Selection(self.layer, self.candidates & rows, self.queries & rows, self.keep_ratio)


@dataclass
class ReductionPlan:
    """roles: (L, B, N) int8 tensor of `Role` values; selections sorted by layer."""

    roles: torch.Tensor
    selections: tuple[Selection, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.roles.dim() != 3:
            raise TokredError(
                f"plan roles must be (layers, batch, seq), got {tuple(self.roles.shape)}"
            )
        n_layers = self.roles.shape[0]
        for s in self.selections:
            if not 0 <= s.layer < n_layers - 1:
                raise TokredError(
                    f"selection layer {s.layer} is out of range: it must leave a later layer "
                    f"to drop tokens in (0..{n_layers - 2} for {n_layers} layers)"
                )
        self.selections = tuple(sorted(self.selections, key=lambda s: s.layer))

    @classmethod
    def full(cls, num_layers: int, batch: int, seq: int, device=None) -> ReductionPlan:
        return cls(torch.zeros(num_layers, batch, seq, dtype=torch.int8, device=device))

    @property
    def num_layers(self) -> int:
        return self.roles.shape[0]

    def clone(self) -> ReductionPlan:
        return ReductionPlan(self.roles.clone(), self.selections)

    def selections_at(self, layer: int) -> list[Selection]:
        return [s for s in self.selections if s.layer == layer]

    def apply_selection(self, selection: Selection, kept: torch.Tensor) -> None:
        """In place: candidates still ACTIVE at the selection layer and not in `kept` (B, N)
        become DROPPED from the next layer on."""
        active = self.roles[selection.layer] == Role.ACTIVE
        drop = selection.candidates & active & ~kept
        later = self.roles[selection.layer + 1 :]
        later.masked_fill_(drop[None], int(Role.DROPPED))

    def resolved_by_position(self) -> ReductionPlan:
        """A static plan in which every selection keeps its earliest candidates.

        The cost model uses this: the number of kept tokens is what a selection fixes, and
        which ones only moves causal-attention pair counts slightly.
        """
        plan = ReductionPlan(self.roles.clone())
        for s in self.selections:
            active = (plan.roles[s.layer] == Role.ACTIVE) & s.candidates
            keep = keep_counts(active.sum(-1), s.keep_ratio)
            rank = active.long().cumsum(-1)
            kept = active & (rank <= keep[:, None])
            plan.apply_selection(s, kept)
        return plan

    def with_full_layers(self, layers) -> ReductionPlan:
        """A copy in which the named layers run every token that is still there in full:
        INJECT and BYPASS become ACTIVE there (DROPPED tokens stay gone, and selections
        are kept). Conflict-aware gating (tokred-train's strategy.gate_threshold) turns
        reduction off layer by layer this way."""
        roles = self.roles.clone()
        for layer in layers:
            if not 0 <= layer < self.num_layers:
                raise TokredError(f"full layer {layer} is out of range 0..{self.num_layers - 1}")
            reduced = (roles[layer] == Role.INJECT) | (roles[layer] == Role.BYPASS)
            roles[layer].masked_fill_(reduced, int(Role.ACTIVE))
        return ReductionPlan(roles, self.selections)

    def role_counts(self) -> torch.Tensor:
        """(L, B, len(Role)) long: tokens of each role per layer and sample."""
        return torch.stack([(self.roles == r).sum(-1) for r in Role], dim=-1)


def _check_ratio(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0 or math.isnan(value):
        raise TokredError(f"{name}={value!r} must be a number in [0, 1]")
