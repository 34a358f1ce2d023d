"""Reduction plans: the role of every token at every layer, plus dynamic selections.

A static policy (HiMix, HMGen, random drop) knows every role before the forward pass. A
dynamic one (FastV, PyramidDrop) decides at a selection layer which candidate tokens to
keep, from attention importance computed in that layer; until then the candidates are
ACTIVE, afterwards the ones not kept are DROPPED. The plan records the static roles and the
selections; the executor (tokred-models) fills the selections in at run time on its own
copy, so that gradient-checkpoint recomputation replays the same decisions.

A route (the `router` policy, mixture-of-depths) is a decision of one layer only: a learned
router scores the candidates inside that layer and only the top `capacity` share of them
gets its compute; the others BYPASS that layer and are candidates again in the next one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .errors import TokredError
from .layout import Task
from .roles import Role

__all__ = ["Selection", "Route", "ReductionPlan", "keep_counts"]


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


@dataclass(frozen=True)
class Route:
    """A learned per-task routing decision in one layer (mixture-of-depths).

    layer:      the routed layer; its router (one per task and layer) scores the candidates
                from their hidden states entering it.
    task:       whose router scores them (the candidates are rows of this task only).
    candidates: (B, N) bool, the tokens competing for compute in `layer` (intersected at
                run time with the tokens ACTIVE there).
    capacity:   share of each sample's candidates that is picked: ceil(capacity * n), known
                on the host before the forward (see `keep_counts`). Unpicked candidates
                BYPASS `layer` only.
    """

    layer: int
    task: Task
    candidates: torch.Tensor
    capacity: float

    def restricted_to(self, rows: torch.Tensor) -> Route:
        """The same route applied only to the samples in the (B,) bool mask `rows`."""
        return Route(self.layer, self.task, self.candidates & rows[:, None], self.capacity)


@dataclass
class ReductionPlan:
    """roles: (L, B, N) int8 tensor of `Role` values; selections and routes sorted by layer."""

    roles: torch.Tensor
    selections: tuple[Selection, ...] = field(default_factory=tuple)
    routes: tuple[Route, ...] = field(default_factory=tuple)

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
        for r in self.routes:
            if not 0 <= r.layer < n_layers:
                raise TokredError(
                    f"route layer {r.layer} is out of range (0..{n_layers - 1} for {n_layers} layers)"
                )
        self.selections = tuple(sorted(self.selections, key=lambda s: s.layer))
        self.routes = tuple(sorted(self.routes, key=lambda r: (r.layer, int(r.task))))

    @classmethod
    def full(cls, num_layers: int, batch: int, seq: int, device=None) -> ReductionPlan:
        return cls(torch.zeros(num_layers, batch, seq, dtype=torch.int8, device=device))

    @property
    def num_layers(self) -> int:
        return self.roles.shape[0]

    def clone(self) -> ReductionPlan:
        return ReductionPlan(self.roles.clone(), self.selections, self.routes)

    def selections_at(self, layer: int) -> list[Selection]:
        return [s for s in self.selections if s.layer == layer]

    def routes_at(self, layer: int) -> list[Route]:
        return [r for r in self.routes if r.layer == layer]

    @property
    def route_layers(self) -> tuple[int, ...]:
        return tuple(sorted({r.layer for r in self.routes}))

    def route_candidates(self, route: Route) -> torch.Tensor:
        """(B, N) bool: the route's candidates that are ACTIVE in its layer."""
        return route.candidates & (self.roles[route.layer] == Role.ACTIVE)

    def apply_route(self, route: Route, picked: torch.Tensor) -> None:
        """In place: the route's candidates ACTIVE in its layer and not `picked` (B, N)
        BYPASS that layer (only that one: they are back in the next)."""
        skip = self.route_candidates(route) & ~picked
        self.roles[route.layer].masked_fill_(skip, int(Role.BYPASS))

    def apply_selection(self, selection: Selection, kept: torch.Tensor) -> None:
        """In place: candidates still ACTIVE at the selection layer and not in `kept` (B, N)
        become DROPPED from the next layer on."""
        active = self.roles[selection.layer] == Role.ACTIVE
        drop = selection.candidates & active & ~kept
        later = self.roles[selection.layer + 1 :]
        later.masked_fill_(drop[None], int(Role.DROPPED))

    def resolved_by_position(self) -> ReductionPlan:
        """A static plan in which every selection keeps, and every route picks, its
        earliest candidates.

        The cost model uses this: the number of kept tokens is what a selection (or a
        route's capacity) fixes, and which ones only moves causal-attention pair counts
        slightly.
        """
        plan = ReductionPlan(self.roles.clone())
        for s in self.selections:
            active = (plan.roles[s.layer] == Role.ACTIVE) & s.candidates
            plan.apply_selection(s, _earliest(active, s.keep_ratio))
        for r in self.routes:
            plan.apply_route(r, _earliest(plan.route_candidates(r), r.capacity))
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
        # A full layer routes nothing either: its routes go, the other layers' stay.
        routes = tuple(r for r in self.routes if r.layer not in set(layers))
        return ReductionPlan(roles, self.selections, routes)

    def role_counts(self) -> torch.Tensor:
        """(L, B, len(Role)) long: tokens of each role per layer and sample."""
        return torch.stack([(self.roles == r).sum(-1) for r in Role], dim=-1)


def _earliest(candidates: torch.Tensor, ratio: float) -> torch.Tensor:
    """(B, N) bool: the first ceil(ratio * n) candidates of each sample."""
    keep = keep_counts(candidates.sum(-1), ratio)
    return candidates & (candidates.long().cumsum(-1) <= keep[:, None])


def _check_ratio(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0 or math.isnan(value):
        raise TokredError(f"{name}={value!r} must be a number in [0, 1]")
