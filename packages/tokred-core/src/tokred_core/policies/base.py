"""The policy interface and its registry.

A policy turns a token layout into a `ReductionPlan`. Each policy is a class with a
dataclass config validated on construction, registered by name (peft-style
self-registration), so configs, the CLI and YAML files can name it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch

from ..errors import TokredError
from ..layout import Task, TokenLayout
from ..plans import ReductionPlan

__all__ = [
    "Policy",
    "PolicyConfig",
    "register_policy",
    "build_policy",
    "available_policies",
    "policy_class",
]

_REGISTRY: dict[str, type[Policy]] = {}


@dataclasses.dataclass
class PolicyConfig:
    """Base for policy configs; subclasses add fields and checks in `__post_init__`."""

    def __post_init__(self) -> None:  # noqa: B027 - subclasses override to validate
        pass


class Policy(ABC):
    name: ClassVar[str]
    config_class: ClassVar[type[PolicyConfig]] = PolicyConfig
    # Tasks the policy is meaningful for; others are refused with a clear error.
    tasks: ClassVar[frozenset[Task]] = frozenset(Task)

    def __init__(self, config: PolicyConfig | None = None, **fields: Any) -> None:
        if config is not None and fields:
            raise TokredError(f"policy {self.name}: give a config or fields, not both")
        self.config = (
            config if config is not None else build_config(self.config_class, fields, self.name)
        )

    def plan(self, layout: TokenLayout, num_layers: int) -> ReductionPlan:
        """The plan of every sample in `layout`, all of which are treated as this policy's task."""
        if num_layers < 1:
            raise TokredError(f"num_layers={num_layers} must be >= 1")
        unsupported = [t for t in layout.tasks.unique().tolist() if Task(t) not in self.tasks]
        if unsupported:
            raise TokredError(
                f"policy {self.name!r} does not support {Task(unsupported[0]).name.lower()} samples "
                f"(supports: {', '.join(sorted(t.name.lower() for t in self.tasks))})"
            )
        return self._plan(layout, num_layers)

    @abstractmethod
    def _plan(self, layout: TokenLayout, num_layers: int) -> ReductionPlan: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"


def register_policy(cls: type[Policy]) -> type[Policy]:
    if cls.name in _REGISTRY:
        raise RuntimeError(f"policy {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def available_policies() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def policy_class(name: str) -> type[Policy]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise TokredError(
            f"unknown policy {name!r}: expected one of {', '.join(available_policies())}"
        ) from None


def build_policy(name: str, **fields: Any) -> Policy:
    """`build_policy("hmgen", num_shallow=5)`; string values (from the CLI) are coerced."""
    return policy_class(name)(**fields)


# ---- config construction with coercion of CLI strings ---------------------------------------
def build_config(cls: type[PolicyConfig], fields: dict[str, Any], owner: str) -> PolicyConfig:
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - set(known))
    if unknown:
        allowed = ", ".join(sorted(known)) or "none"
        raise TokredError(
            f"unknown key {unknown[0]!r} for policy {owner!r} (known keys: {allowed})"
        )
    hints = typing.get_type_hints(cls)
    values = {k: _coerce(v, hints[k], f"{owner}.{k}") for k, v in fields.items()}
    try:
        return cls(**values)
    except TypeError as exc:  # e.g. a value of the wrong type reaching a check
        raise TokredError(f"policy {owner!r}: {exc}") from None


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Turn CLI/YAML strings into the field's type; leave typed values for the checks."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except TokredError as exc:
                errors.append(str(exc))
        raise TokredError(errors[0] if errors else f"{key}={value!r} has the wrong type")
    if origin in (list, tuple):
        (item,) = args[:1] or (str,)
        if isinstance(value, str):
            parts = [p for p in value.strip("[]() ").split(",") if p.strip()]
        elif isinstance(value, (list, tuple)):
            parts = list(value)
        else:
            raise TokredError(f"{key}={value!r} must be a list")
        return [_coerce(p.strip() if isinstance(p, str) else p, item, key) for p in parts]
    if origin is typing.Literal:
        if value not in args:
            raise TokredError(f"{key}={value!r} must be one of {', '.join(map(repr, args))}")
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise TokredError(f"{key}={value!r} must be true or false")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise TokredError(f"{key}={value!r} must be an integer")
        try:
            return int(value)
        except ValueError:
            raise TokredError(f"{key}={value!r} must be an integer") from None
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise TokredError(f"{key}={value!r} must be a number")
        try:
            return float(value)
        except ValueError:
            raise TokredError(f"{key}={value!r} must be a number") from None
    if hint is str:
        return str(value)
    return value


def require_image_tokens(layout: TokenLayout, policy: str) -> torch.Tensor:
    """(B, N) image mask; raise naming the first sample without image tokens."""
    image = layout.image_mask()
    empty = ~image.any(-1)
    if bool(empty.any()):
        b = layout.sample_name(int(torch.nonzero(empty)[0, 0]))
        raise TokredError(f"policy {policy!r} needs image tokens but sample {b} has none")
    return image


def check_layer(
    value: int, num_layers: int, key: str, low: int = 0, high: int | None = None
) -> None:
    high = num_layers - 1 if high is None else high
    if high < low:
        raise TokredError(
            f"{key}={value} is out of range: a {num_layers}-layer model has no valid {key} "
            f"(it needs at least {low + 1} layers)"
        )
    if not low <= value <= high:
        raise TokredError(
            f"{key}={value} is out of range: the model has {num_layers} layers, so it must be "
            f"in {low}..{high}"
        )
