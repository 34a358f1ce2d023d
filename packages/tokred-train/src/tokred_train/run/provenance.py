"""The run's own config and software versions, stored in every checkpoint, and the check
of a config against them.

Why: a checkpoint used to hold weights and state only; whether a resume or an evaluation
rebuilt the same model and plan depended on the run folder's config.yaml, which a user
can edit or lose. Then a changed policy was accepted silently (and config.yaml rewritten
to say so), and a changed model size ended in a shape traceback. With the config in the
checkpoint (`run.json`, checksummed by the COMPLETE marker like the other files), a
mismatch in the sections that decide the weights and batches is one line naming the first
differing key, with or without config.yaml.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from tokred_core import TokredError

__all__ = [
    "RUN_FILE",
    "RESUME_SECTIONS",
    "checkpoint_provenance",
    "read_provenance",
    "first_difference",
    "check_same_run",
    "version_changes",
]

RUN_FILE = "run.json"
#: Sections that decide the weights' shapes, the data and the reduction plan: they must
#: match for a resume to be exact and for an evaluation to rebuild the trained model
#: (optim, run and eval may change).
RESUME_SECTIONS = ("model", "data", "reduction", "lora")
_PACKAGES = (
    "torch",
    "transformers",
    "peft",
    "bitsandbytes",
    "tokred-core",
    "tokred-kernels",
    "tokred-models",
    "tokred-train",
)


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def checkpoint_provenance(config: Mapping[str, Any]) -> dict[str, Any]:
    """What `run.json` holds: the run's resolved config (as config_to_dict gives it) and the
    versions of Python and the packages that trained it."""
    return {"config": dict(config), "versions": _versions()}


def read_provenance(checkpoint: Path) -> dict[str, Any] | None:
    """The checkpoint's run.json, or None for a checkpoint written before it existed. A
    run.json that cannot be read is one line (the marker's checksum normally catches it)."""
    path = Path(checkpoint) / RUN_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TokredError(f"{path} cannot be read ({type(exc).__name__})") from None
    if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
        raise TokredError(f"{path} holds no run config")
    return data


def first_difference(a: Any, b: Any, prefix: str) -> str | None:
    """The dotted key of the first difference between two config trees, or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            diff = first_difference(a.get(key), b.get(key), f"{prefix}.{key}")
            if diff:
                return diff
        return None
    return None if a == b else prefix


def check_same_run(
    saved: Mapping[str, Any], now: Mapping[str, Any], source: Path, fix: str
) -> None:
    """Refuse, in one line, a config whose RESUME_SECTIONS differ from `saved` (the config
    recorded at `source`); `fix` says what the user should do instead."""
    for section in RESUME_SECTIONS:
        diff = first_difference(saved.get(section), now.get(section), section)
        if diff:
            was, now_value = _lookup(saved, diff), _lookup(now, diff)
            raise TokredError(
                f"{diff}={now_value!r} differs from the run's {was!r} (recorded in {source}); {fix}"
            )


def _lookup(tree: Mapping[str, Any], dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def version_changes(saved: Mapping[str, Any]) -> list[str]:
    """'name a -> b' for each package whose version differs from the checkpoint's: a
    resume across versions trains on, but may not reproduce the uninterrupted run."""
    now = _versions()
    recorded = saved.get("versions") or {}
    return [
        f"{name} {recorded[name]} -> {now.get(name)}"
        for name in sorted(recorded)
        if name in now and recorded[name] != now.get(name)
    ]
