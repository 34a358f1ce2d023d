"""One policy per task, composed into a single plan for a batch that mixes tasks.

This is how a unified run is configured: e.g. himix for understanding and hmgen for
generation (the paper's joint acceleration). Rows of each task take their policy's roles,
selections and routes; padding is DROPPED everywhere so no layer spends work on it.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..errors import TokredError
from ..layout import Task, TokenLayout, parse_task
from ..plans import ReductionPlan, Route
from ..roles import Role
from .base import Policy, build_policy
from .none import NoReduction

__all__ = ["TaskPolicies"]


class TaskPolicies:
    """{task: policy}; a task without an entry runs unreduced."""

    def __init__(self, policies: Mapping[Task | str, Policy | str] | None = None) -> None:
        self.policies: dict[Task, Policy] = {t: NoReduction() for t in Task}
        for task, policy in (policies or {}).items():
            task = parse_task(task)
            if isinstance(policy, str):
                policy = build_policy(policy)
            if task not in policy.tasks:
                raise TokredError(
                    f"policy {policy.name!r} cannot serve {task.name.lower()} "
                    f"(it supports {', '.join(sorted(t.name.lower() for t in policy.tasks))})"
                )
            self.policies[task] = policy

    @classmethod
    def uniform(cls, policy: Policy | str) -> TaskPolicies:
        return cls({Task.UNDERSTANDING: policy, Task.GENERATION: policy})

    def plan(self, layout: TokenLayout, num_layers: int) -> ReductionPlan:
        plan = ReductionPlan.full(num_layers, layout.batch_size, layout.seq_len, layout.device)
        selections = []
        routes = []
        for task, policy in self.policies.items():
            rows = layout.task_mask(task)
            if not bool(rows.any()):
                continue
            sub = policy.plan(layout.select(rows), num_layers)
            plan.roles[:, rows] = sub.roles
            for s in sub.selections:
                full_c = torch.zeros_like(rows[:, None].expand_as(layout.segments))
                full_q = full_c.clone()
                full_c[rows] = s.candidates
                full_q[rows] = s.queries
                selections.append(type(s)(s.layer, full_c, full_q, s.keep_ratio))
            for r in sub.routes:
                full_c = torch.zeros_like(rows[:, None].expand_as(layout.segments))
                full_c[rows] = r.candidates
                routes.append(Route(r.layer, r.task, full_c, r.capacity))
        plan.roles.masked_fill_(~layout.valid_mask()[None], int(Role.DROPPED))
        return ReductionPlan(plan.roles, tuple(selections), tuple(routes))

    def routed_layers(self, num_layers: int) -> dict[Task, list[int]]:
        """{task: the layers its router policy routes}, for the tasks served by one: where
        the model needs a router module (tokred-models adds them when patching)."""
        return {
            task: policy.routed_layers(num_layers)
            for task, policy in self.policies.items()
            if hasattr(policy, "routed_layers")
        }

    def __repr__(self) -> str:
        inner = ", ".join(f"{t.name.lower()}={p!r}" for t, p in self.policies.items())
        return f"TaskPolicies({inner})"
