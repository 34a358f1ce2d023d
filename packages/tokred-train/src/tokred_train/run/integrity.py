"""What a checkpoint's COMPLETE marker records of its files, and the check against it.

Why: a marker that only lists file names lets a truncated weights file or a garbage
trainer state through to torch.load, whose traceback ends the resume although an older
checkpoint is intact. The marker records each file's size and SHA-256, so a reader can tell
a damaged checkpoint before loading it, say what is wrong in one line and fall back.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tokred_core import TokredError

__all__ = ["check_weight_names", "describe_files", "damage"]

_CHUNK = 1 << 20


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def describe_files(folder: Path, names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """{name: {"size": bytes, "sha256": hex}} of files in `folder` (for the marker)."""
    return {n: {"size": (folder / n).stat().st_size, "sha256": _sha256(folder / n)} for n in names}


def damage(folder: Path, marker_name: str, step: int, checksums: bool = True) -> str | None:
    """What is wrong with the checkpoint `folder` of `step`, or None when it is whole.

    A marker from before checksums (a list of names) is checked for the files' presence
    only. checksums=False checks sizes only (cheap: for listing many checkpoints).
    """
    marker = folder / marker_name
    if not marker.is_file():
        return f"no {marker_name} marker"
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return f"its {marker_name} marker is not readable JSON"
    if not isinstance(data, dict) or data.get("step") != step:
        return f"its {marker_name} marker is not for step {step}"
    files = data.get("files", [])
    expected = files if isinstance(files, dict) else dict.fromkeys(files)
    for name, want in expected.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if not isinstance(want, dict):
            continue
        size = path.stat().st_size
        if size != want.get("size"):
            return f"{name} has {size} bytes, the marker recorded {want.get('size')}"
        if checksums and _sha256(path) != want.get("sha256"):
            return f"{name} does not match its recorded SHA-256"
    return None


def check_weight_names(
    path: Path, weights: Iterable[str], trainable: Iterable[str], params: Iterable[str]
) -> None:
    """One line when a checkpoint's weights (by the model's names) lack one of the model's
    `trainable` weights or hold a name outside its `params`."""
    names, params = list(weights), set(params)
    saved = set(names)
    missing = [n for n in trainable if n not in saved]
    unknown = [n for n in names if n not in params]
    if missing or unknown:
        what = f"missing {missing[0]!r}" if missing else f"unexpected {unknown[0]!r}"
        raise TokredError(
            f"{path}: the checkpoint does not fit this model ({what}); resume with the config "
            "the run was started with"
        )
