"""Learned per-task routers (the `router` policy, mixture-of-depths): their modules and the
picks of one routed layer.

Each routed decoder layer holds `token_router.<task>`, an `nn.Linear(hidden, 1)` per task
whose policy routes that layer. In the layer the task's router scores the task's image
tokens from their hidden states entering it (the raw residual stream, as in
mixture-of-depths); the top ceil(capacity * n) of each sample are picked and run the layer
(queries and keys at their original positions, FFN), the others BYPASS it. A picked token's
update is scaled by its gate, out = h + g * (layer(h) - h) with g = 1 + tanh(score): the
top-k choice itself has no gradient, so the gate is what trains the router. Weights start
at zero, so g = 1 and a fresh router changes nothing but which tokens run (ties go to the
earliest candidates); text tokens are never gated.

Sizes are known on the host before the forward (the candidates come from the plan and each
sample picks ceil(capacity * n) of them), so the candidates' index is built in `prepare`;
which ones are picked is known only in the layer, whose index sets are then rebuilt with
one copy of its roles to the host (schedule.StepSchedule.set_layer).

Top-k over a sequence is not causal: whether token i is picked depends on the scores of
later tokens. Training is exact under that rule; incremental decoding cannot reproduce it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from tokred_core import ReductionPlan, Task, TokredError, keep_counts
from tokred_kernels import gather_packed, pack_to_padded, scatter_packed, topk_per_sample
from tokred_kernels.gather_scatter import TokenIndex, token_index
from torch import nn

__all__ = [
    "ROUTER_ATTR",
    "RouteSet",
    "add_routers",
    "remove_routers",
    "layer_routers",
    "route_sets",
    "route_gate",
    "gated_update",
]

ROUTER_ATTR = "token_router"
#: The order of a layer's routers and of its candidates' packed rows.
TASK_ORDER = tuple(Task)


def _task_key(task: Task) -> str:
    return task.name.lower()


def add_routers(layer: nn.Module, tasks: Iterable[Task], hidden_size: int) -> None:
    """Give `layer` a zero-initialised router per task in `tasks` it does not have yet
    (routers already there keep their trained weights)."""
    bank = layer_routers(layer)
    if bank is None:
        bank = nn.ModuleDict()
        setattr(layer, ROUTER_ATTR, bank)
    like = next((p for p in layer.parameters() if p.is_floating_point()), None)
    for task in sorted(set(tasks)):
        key = _task_key(task)
        if key in bank:
            continue
        router = nn.Linear(hidden_size, 1, bias=True)
        nn.init.zeros_(router.weight)
        nn.init.zeros_(router.bias)
        if like is not None:
            router.to(device=like.device, dtype=like.dtype)
        bank[key] = router


def remove_routers(layer: nn.Module) -> None:
    if hasattr(layer, ROUTER_ATTR):
        delattr(layer, ROUTER_ATTR)


def layer_routers(layer: nn.Module) -> nn.ModuleDict | None:
    return getattr(layer, ROUTER_ATTR, None)


@dataclass
class RouteSet:
    """One routed layer's candidates: packed rows ordered by task, so each task's router
    scores a slice; the rows of each task (host) and the picks per sample (device)."""

    index: TokenIndex
    task_counts: list[int]
    keep: torch.Tensor


def route_sets(plan: ReductionPlan, device: torch.device) -> dict[int, RouteSet]:
    """{routed layer: its RouteSet} from a host plan, moved to `device`; layers with the
    same candidates and capacities (every routed layer of one policy) share one."""
    out: dict[int, RouteSet] = {}
    seen: dict[tuple, RouteSet] = {}
    for layer in plan.route_layers:
        routes = plan.routes_at(layer)
        # Candidates of one task live in that task's rows only, so the union is disjoint.
        masks = {r.task: plan.route_candidates(r).cpu() for r in routes}
        key = tuple((int(r.task), r.capacity, masks[r.task].numpy().tobytes()) for r in routes)
        if key in seen:
            out[layer] = seen[key]
            continue
        union = torch.stack(list(masks.values())).any(0)
        keep = torch.zeros(union.shape[0], dtype=torch.long)
        for r in routes:
            mask = masks[r.task]
            rows = mask.any(-1)
            keep[rows] = keep_counts(mask.sum(-1), r.capacity)[rows]
        index = token_index(union)
        task_of = torch.full(union.shape, -1, dtype=torch.long)
        for task, mask in masks.items():
            task_of[mask] = TASK_ORDER.index(task)
        row_tasks = task_of.reshape(-1).index_select(0, index.indices)
        order = torch.sort(row_tasks, stable=True).indices
        counts = torch.bincount(row_tasks, minlength=len(TASK_ORDER)).tolist()
        out[layer] = seen[key] = RouteSet(index.permuted(order).to(device), counts, keep.to(device))
    return out


def _scores(routers: nn.ModuleDict, rows: torch.Tensor, task_counts: list[int]) -> torch.Tensor:
    """(n,) score of each candidate row through its task's router. Every router of the
    layer runs (on zero rows for a task without candidates) so that all processes of a
    data-parallel job run the same modules and every router gets a gradient."""
    outs, start = [], 0
    for task, count in zip(TASK_ORDER, task_counts, strict=True):
        key = _task_key(task)
        if key not in routers:
            if count:
                raise TokredError(
                    f"a plan routes {key} tokens through a layer without a {key} router: "
                    "patch the model with the router policy (apply_reduction) first"
                )
            continue
        router = routers[key]
        part = rows.narrow(0, start, count)
        outs.append(router(part.to(router.weight.dtype)).squeeze(-1))
        start += count
    return torch.cat(outs) if outs else rows.new_zeros(0)


def route_gate(layer: nn.Module, idx: int, state, x: torch.Tensor) -> torch.Tensor:
    """Route layer `idx`: score its candidates, pick the top ones (once per forward: a
    checkpoint recomputation keeps them) and rebuild its pattern. Returns the (B, N, 1)
    gate, 1 + tanh(score) at the candidates and exactly 1 elsewhere."""
    rs: RouteSet = state.routes[idx]
    routers = layer_routers(layer)
    if routers is None:
        raise TokredError(f"layer {idx} is routed by the plan but has no router modules")
    scores = _scores(routers, gather_packed(x, rs.index), rs.task_counts)
    if idx not in state.routed_layers:
        state.routed_layers.add(idx)
        with torch.no_grad():
            padded = pack_to_padded(scores.detach().float()[:, None], rs.index)[..., 0]
            slots = topk_per_sample(padded, rs.index.padded_valid, rs.keep)
            bsz, seq = state.layout.batch_size, state.layout.seq_len
            picked = torch.zeros(bsz * seq, dtype=torch.bool, device=x.device)
            picked[rs.index.padded_indices[slots]] = True
            for route in state.plan.routes_at(idx):
                state.plan.apply_route(route, picked.view(bsz, seq))
        # This layer's index sets follow its picks: the one read-back of a routed layer.
        state.schedule.set_layer(idx, state.plan.roles[idx])
    gate = (1.0 + torch.tanh(scores)).to(x.dtype)[:, None]
    ones = x.new_ones(x.shape[0], x.shape[1], 1)
    return scatter_packed(ones, gate, rs.index)


def gated_update(
    rows_in: torch.Tensor, rows_out: torch.Tensor, gate: torch.Tensor, active: TokenIndex
) -> torch.Tensor:
    """h + g * (layer(h) - h) on the ACTIVE rows, written as layer(h) + (g - 1) * (...)
    so that rows with g = 1 (text) come out bit-identical to the ungated layer."""
    g = gather_packed(gate, active)
    return rows_out + (g - 1.0) * (rows_out - rows_in)
