"""Policies written as text: one grammar for the command line and the training config.

    himix                                             a policy by name, with its defaults
    hmgen:num_shallow=1                               options as key=value after the name
    hmgen:num_shallow=2:pattern=contiguous            several options, ':'-separated
    understanding=himix,generation=hmgen:num_shallow=1
                                                      one policy per task, ','-separated

Option values stay text here; the policy's config converts and checks them (`build_policy`),
so a list option reads `pyramid_drop:boundaries=1,2`. In the per-task form ',' separates
the tasks, so a list option there cannot hold one: give it in the config's `options`.
Every mistake raises `TokredError` naming the bad part; `what` says where the text came
from (e.g. "--policy"), so the message points at it.
"""

from __future__ import annotations

import typing
from typing import Any

from ..errors import TokredError
from ..layout import parse_task
from .base import Policy, _coerce, build_policy, policy_class
from .composite import TaskPolicies

__all__ = ["parse_policy", "parse_task_policies", "split_policy_spec"]


def split_policy_spec(
    text: str, what: str = "policy", typed: bool = False
) -> tuple[str, dict[str, Any]]:
    """'hmgen:num_shallow=1' -> ('hmgen', {'num_shallow': '1'}); a bare name has no options.
    Only the syntax is checked: the name and the values are the policy's to judge. `typed`:
    values the policy can read come in its fields' types ({'num_shallow': 1}, as YAML would
    give them); the rest (an unknown policy or key, a bad value) stay text for
    `build_policy` to report."""
    name, *opts = text.split(":")
    options: dict[str, Any] = {}
    for opt in opts:
        key, sep, value = opt.partition("=")
        if not sep or not key.strip():
            raise TokredError(f"{what} option {opt!r} must be key=value, e.g. hmgen:num_shallow=1")
        options[key.strip()] = value.strip()
    name = name.strip()
    return name, (_typed(name, options) if typed else options)


def _typed(name: str, options: dict[str, Any]) -> dict[str, Any]:
    try:
        hints = typing.get_type_hints(policy_class(name).config_class)
    except TokredError:
        return options
    out = {}
    for key, value in options.items():
        try:
            out[key] = _coerce(value, hints[key], f"{name}.{key}") if key in hints else value
        except TokredError:
            out[key] = value
    return out


def parse_policy(text: str, what: str = "policy") -> Policy:
    """A built, checked policy from 'NAME' or 'NAME:key=value[:key=value...]'."""
    name, options = split_policy_spec(text, what)
    return build_policy(name, **options)


def parse_task_policies(text: str, what: str = "policy") -> TaskPolicies:
    """'himix' (every task the policy serves; the others run unreduced), 'none', or
    'understanding=himix,generation=hmgen:num_shallow=1' (a task left out runs unreduced)."""
    text = text.strip()
    if "=" not in text.split(":")[0]:  # no TASK= before the first option: one policy
        policy = parse_policy(text, what)
        return TaskPolicies({task: policy for task in policy.tasks})
    mapping = {}
    for part in text.split(","):
        task, sep, spec = part.partition("=")
        if not sep or not spec.strip():
            raise TokredError(f"{what} {part!r}: expected TASK=NAME, e.g. understanding=himix")
        mapping[parse_task(task.strip())] = parse_policy(spec, what)
    return TaskPolicies(mapping)
