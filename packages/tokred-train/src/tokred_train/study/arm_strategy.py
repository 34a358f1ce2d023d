"""The strategy options of a study arm: the part of its name after `#` (issue 10).

    himix+hmgen@task#full_steps=0.1,distill=1
    himix+hmgen@task#surgery=pcgrad
    himix+hmgen@task#gate_threshold=0.0,gate_hysteresis=0.1

Comma-separated `key=value` items, each a field of the `strategy` config section
(`StrategyConfig`), checked by building that section, so a bad value fails with the
section's own message, naming the key, before anything trains.

Why a canonical form: what a run trains with is the options that take effect, with their
values typed. `#full_steps=0.10` and `#full_steps=0.1` train the same run, an option at its
default (`#surgery=none`) or one without the option it qualifies (distill_temperature
without distill, gate_hysteresis without gate_threshold) changes nothing, so none of these
reach a run's identity or overrides.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tokred_core import TokredError

from ..config import StrategyConfig
from ..config.coerce import from_dict

__all__ = [
    "SINGLE_TASK_INERT",
    "Strategy",
    "effective_options",
    "needing_reduction",
    "option_overrides",
    "parse_strategy",
]

#: (key, typed value) pairs, sorted by key: hashable, so a run identity can hold them.
Strategy = tuple[tuple[str, Any], ...]

#: Options that act between the two tasks' gradients, so they do nothing in a run that
#: trains one task: PCGrad has no second gradient to project against, and gating reads the
#: tasks' gradient conflict, which a single-task run cannot measure.
SINGLE_TASK_INERT = frozenset({"surgery", "gate_threshold", "gate_hysteresis"})

#: Options that only qualify another: (option, the option it needs to have an effect).
_QUALIFIES = {"distill_temperature": "distill", "gate_hysteresis": "gate_threshold"}
#: Options that change nothing without a reduction to alternate with or gate.
_NEED_REDUCTION = ("full_steps", "distill", "gate_threshold")

_DEFAULTS = {f.name: f.default for f in dataclasses.fields(StrategyConfig) if f.init}


def _split_items(text: str, arm: str) -> dict[str, str]:
    items: dict[str, str] = {}
    for item in text.split(","):
        key, eq, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not key or not value:
            raise TokredError(
                f"arm {arm!r}: strategy option {item.strip()!r}: expected KEY=VALUE, e.g. "
                "#full_steps=0.1,distill=1"
            )
        if key in items:
            raise TokredError(f"arm {arm!r}: strategy option {key!r} is given twice")
        items[key] = value
    return items


def parse_strategy(text: str, arm: str) -> Strategy:
    """The options after `#`, checked as a `strategy` section, in canonical form."""
    items = _split_items(text, arm)
    try:
        config = from_dict(StrategyConfig, items, "strategy")
    except TokredError as exc:
        raise TokredError(f"arm {arm!r}: {exc}") from None
    return effective_options(_changed(config))


def _changed(config: StrategyConfig) -> Strategy:
    values = dataclasses.asdict(config)
    return tuple(sorted((k, v) for k, v in values.items() if v != _DEFAULTS[k]))


def effective_options(options: Strategy, *, tasks: int = 2, reduced: bool = True) -> Strategy:
    """The options that take effect in a run training `tasks` tasks (2: unified), with a
    reduction on at least one of its tasks (`reduced`)."""
    kept = dict(options)
    if tasks < 2:
        kept = {k: v for k, v in kept.items() if k not in SINGLE_TASK_INERT}
    if not reduced:
        kept = {k: v for k, v in kept.items() if k not in _NEED_REDUCTION}
    kept = {k: v for k, v in kept.items() if k not in _QUALIFIES or _QUALIFIES[k] in kept}
    return tuple(sorted(kept.items()))


def needing_reduction(options: Strategy) -> list[str]:
    """The options of `options` that do nothing without a reduction."""
    return [k for k, _ in options if k in _NEED_REDUCTION]


def _yaml_value(value: Any) -> str:
    if value is None:
        return "null"
    return repr(value) if isinstance(value, float) else str(value)


def option_overrides(options: Strategy) -> list[str]:
    """`strategy.<key>=<value>` config overrides for `options`."""
    return [f"strategy.{key}={_yaml_value(value)}" for key, value in options]
