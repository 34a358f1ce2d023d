"""A generic loader from plain data (YAML, `key=value` text) to nested dataclasses.

Why apart from the schema: the rules (type checks against the field hints, text
converted to the field's type, unknown keys named with their full path) hold for any tree
of dataclasses; `schema.py` only says what the sections are and how each checks itself.
A dataclass whose section may be written as one value sets `SHORTHAND_FIELD` to the field
that value fills (`reduction.understanding: himix` is `{policy: himix}`).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal

from tokred_core import TokredError

__all__ = ["check_positive", "config_error", "coerce", "from_dict"]


def config_error(key: str, message: str) -> TokredError:
    """The one-line error naming the full key of a bad value."""
    return TokredError(f"{key}: {message}")


def _type_name(hint: Any) -> str:
    if hint is bool:
        return "true or false"
    if hint is int:
        return "an integer"
    if hint is float:
        return "a number"
    if hint is str:
        return "a string"
    return getattr(hint, "__name__", str(hint))


def check_positive(section: str, obj: Any, *names: str, allow_zero: bool = False) -> None:
    """Each named field of `obj` is > 0 (>= 0 with allow_zero), or None."""
    for name in names:
        value = getattr(obj, name)
        if value is None:
            continue
        if value < 0 or (value == 0 and not allow_zero):
            bound = ">= 0" if allow_zero else "> 0"
            raise config_error(f"{section}.{name}", f"{value} must be {bound}")


def coerce(value: Any, hint: Any, key: str) -> Any:
    """Check `value` against the field type `hint`, converting what YAML and the command line
    give as text ('1e-3' -> 1e-3, 'true' -> True); raise naming `key` otherwise."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        words = ("null", "none", "auto") if bool in args else ("null", "none")
        if value is None or (isinstance(value, str) and value.lower() in words):
            if type(None) in args:
                return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(value, arg, key)
            except TokredError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]
        raise config_error(key, f"{value!r} has the wrong type")
    if origin is Literal:
        if value not in args:
            raise config_error(key, f"{value!r} must be one of {', '.join(map(repr, args))}")
        return value
    if origin in (list, tuple):
        item = args[0] if args else Any
        if isinstance(value, str):
            value = [p.strip() for p in value.strip("[]() ").split(",") if p.strip()]
        if not isinstance(value, (list, tuple)):
            raise config_error(key, f"expected a list, got {value!r}")
        return [coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise config_error(key, f"expected a mapping, got {value!r}")
        return {str(k): v for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, key)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
    elif hint is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
        if number is not None:
            # inf or NaN in a learning rate, clip norm or epsilon trains on NaN from the
            # second step on and ends in a NaN checkpoint: refused here, by name.
            if not math.isfinite(number):
                raise config_error(key, f"{value!r} is not a finite number")
            return number
    elif hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    else:
        return value
    raise config_error(key, f"expected {_type_name(hint)}, got {value!r}")


def from_dict(cls: type, raw: Any, prefix: str) -> Any:
    shorthand = getattr(cls, "SHORTHAND_FIELD", None)
    if shorthand is not None and isinstance(raw, str):
        raw = {shorthand: raw}  # a section given as one value names its main field
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        where = prefix or "the config"
        raise config_error(where, f"expected a section (a mapping of keys), got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    for key in raw:
        if key not in fields:
            name = f"{prefix}.{key}" if prefix else str(key)
            raise config_error(name, f"unknown key (known: {', '.join(fields)})")
    values = {
        name: coerce(value, hints[name], f"{prefix}.{name}" if prefix else name)
        for name, value in raw.items()
    }
    try:
        return cls(**values)
    except TokredError:
        raise
    except (TypeError, ValueError) as exc:  # a check tripping over a value of the wrong type
        raise config_error(prefix or "config", str(exc)) from None
