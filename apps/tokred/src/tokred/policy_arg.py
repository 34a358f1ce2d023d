"""The --policy value of `tokred analyze` and `tokred eval`: tokred_core's policy grammar,
plus the word `run` for the model's own reduction. Light (no model stack)."""

from __future__ import annotations

from tokred_core import TaskPolicies, parse_task_policies

__all__ = ["parse_policy_arg"]


def parse_policy_arg(spec: str | None) -> TaskPolicies | None:
    """'run' (or nothing) -> None: keep the model's own reduction. Anything else is
    tokred_core's grammar (parse_task_policies): 'none', 'himix' (every task it serves), or
    'understanding=himix,generation=hmgen:num_shallow=1' (one policy per task)."""
    if spec is None or spec.strip() in ("", "run"):
        return None
    return parse_task_policies(spec, what="--policy")
