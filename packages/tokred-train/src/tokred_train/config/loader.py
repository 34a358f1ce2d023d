"""Load a training config from YAML, a mapping or the defaults, with `key=value`
overrides on top; save the resolved config back as YAML.

    config = load_config("apps/tokred/src/tokred/configs/tiny-shapes.yaml", ["optim.lr=1e-3"])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from tokred_core import TokredError

from ..atomic import atomic_write_text
from .coerce import config_error, from_dict
from .schema import TrainConfig

__all__ = ["apply_overrides", "config_to_dict", "load_config", "save_config"]


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    """The resolved config as plain YAML-able data."""
    return dataclasses.asdict(config)


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Set `a.b.c=value` items on a raw config mapping (values parsed as YAML)."""
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise TokredError(f"override {item!r}: expected KEY=VALUE, e.g. optim.lr=1e-3")
        parts = key.split(".")
        node = raw
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if isinstance(child, str) and depth == 1 and parts[0] == "reduction":
                child = {"policy": child}  # `understanding: himix` shorthand, now with options
            if child is None:
                child = {}
            if not isinstance(child, dict):
                raise config_error(".".join(parts[: depth + 1]), f"is {child!r}, not a section")
            node[part] = child
            node = child
        node[parts[-1]] = _parse_value(text)
    return raw


def load_config(
    source: str | Path | Mapping[str, Any] | TrainConfig | None = None,
    overrides: Sequence[str] = (),
) -> TrainConfig:
    """A checked `TrainConfig` from a YAML file, a mapping (or nothing: the defaults), with
    `key=value` overrides applied on top."""
    if isinstance(source, TrainConfig):
        raw: Any = config_to_dict(source)
    elif source is None:
        raw = {}
    elif isinstance(source, Mapping):
        raw = _deep_copy(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise TokredError(f"config file not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise TokredError(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from None
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise TokredError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    raw = apply_overrides(raw, overrides)
    return from_dict(TrainConfig, raw, "")


def _deep_copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _deep_copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_deep_copy(v) for v in value]
    return value


def save_config(config: TrainConfig, path: str | Path) -> Path:
    """Write the resolved config as YAML (atomically); `load_config(path)` reads it back."""
    path = Path(path)
    atomic_write_text(path, yaml.safe_dump(config_to_dict(config), sort_keys=False))
    return path
