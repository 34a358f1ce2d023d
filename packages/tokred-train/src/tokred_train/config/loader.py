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

__all__ = ["apply_overrides", "config_to_dict", "load_config", "read_yaml", "save_config"]


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    """The resolved config as plain YAML-able data."""
    return dataclasses.asdict(config)


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping (plain YAML keeps the
    last, so a repeated `optim:` section would silently drop the first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                line = key_node.start_mark.line + 1
                raise TokredError(f"key {key!r} is given twice (again on line {line})")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> Any:
    """A YAML file's data (safe types only); one-line errors for bad text, bad YAML and
    duplicate keys, each naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise TokredError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        raise TokredError(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from None
    except TokredError as exc:
        raise TokredError(f"{path}: {exc}") from None


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
        raw = read_yaml(path)
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
