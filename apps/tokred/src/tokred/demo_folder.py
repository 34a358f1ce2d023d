"""The demo's output folder: which files in it the demo wrote, so that a rerun replaces
those and nothing else.

    claim_folder(out, force)  ->  refuse, or remove the earlier demo's files, then mark out
    record_files(out, done)   ->  list what the demo has written so far in the marker

The marker `out/.tokred-demo` lists every file the demo wrote under its own paths
(DEMO_PATHS: the two run folders, their allocation folders, the report, metrics and
figures), each with its size and modification time. A rerun removes a file only when it
is listed there, lies under DEMO_PATHS and is unchanged since; anything else under
DEMO_PATHS is in the way and refused by name (the demo overwrites nothing it did not
write), and anything elsewhere in `out` is left alone. A non-empty folder without a
marker is refused unless `force`. Every check runs before the first file is touched.

Why: a rerun used to `rmtree` the run folders, taking a user's file with them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tokred_core import TokredError

__all__ = ["DEMO_PATHS", "MARKER", "RUN_NAMES", "claim_folder", "record_files"]

MARKER = ".tokred-demo"
_FORMAT = "tokred-demo-files"

#: The demo's two runs (demo_run trains, evaluates and probes each under this name).
RUN_NAMES = ("baseline", "reduced")

#: Every path the demo writes, relative to --out: folders it fills, then single files.
DEMO_PATHS = (
    *(f"runs/{name}" for name in RUN_NAMES),
    *(f"allocation/{name}" for name in RUN_NAMES),
    *(f"samples_{name}.png" for name in RUN_NAMES),
    "allocation/image_share_per_layer.png",
    "metrics.json",
    "report.md",
)


def _stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _read_marker(out: Path) -> dict[str, list[int]] | None:
    """The files an earlier demo listed (None: no marker, not a demo folder)."""
    marker = out / MARKER
    if not os.path.lexists(marker):
        return None
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
        if data.get("format") != _FORMAT or not isinstance(data.get("files"), dict):
            raise ValueError(f"not a {_FORMAT} file")
        return {str(k): list(v) for k, v in data["files"].items()}
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise TokredError(
            f"--out {out}: its {MARKER} is unreadable ({exc}); remove that file if the "
            "folder holds an earlier demo, or choose another --out"
        ) from None


def _in_the_way(out: Path, rel: str) -> TokredError:
    return TokredError(
        f"--out {out}: {rel} was not written by an earlier demo into this folder (or was "
        "changed since); the demo never removes or overwrites such files: move it away, "
        "or choose another --out"
    )


def _entries(out: Path, rel: str) -> list[str]:
    """The files and links at or under `out/rel` (relative to out), refusing a link or a
    file standing where the demo needs a folder."""
    parts = Path(rel).parts
    for i in range(1, len(parts)):  # runs/, allocation/: folders the demo writes into
        parent = out.joinpath(*parts[:i])
        if parent.is_symlink() or (parent.exists() and not parent.is_dir()):
            raise _in_the_way(out, Path(*parts[:i]).as_posix())
    path = out / rel
    if not os.path.lexists(path):
        return []
    if path.is_symlink() or not path.is_dir():
        return [rel]
    found = []
    for root, dirs, files in os.walk(path):  # never follows links
        base = Path(root).relative_to(out)
        links = [d for d in dirs if (Path(root) / d).is_symlink()]
        found += [(base / name).as_posix() for name in (*files, *links)]
    return found


def _earlier_files(out: Path, force: bool) -> tuple[list[str], list[str]]:
    """(the earlier demo's files to remove, folders of DEMO_PATHS present); raises on
    anything in the way, having changed nothing."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise TokredError(f"--out {out} is not a folder; choose another --out")
    if not out.exists():
        return [], []
    listed = _read_marker(out)
    if listed is None and not force and any(out.iterdir()):
        raise TokredError(
            f"--out {out} is not empty and holds no earlier demo ({MARKER} is missing); "
            "choose an empty or new folder, or pass --force to write into it (the demo "
            "never removes or overwrites files it did not write)"
        )
    listed = listed or {}
    remove: list[str] = []
    for rel in DEMO_PATHS:
        for entry in _entries(out, rel):
            path = out / entry
            if path.is_symlink() or not path.is_file() or listed.get(entry) != _stamp(path):
                raise _in_the_way(out, entry)
            remove.append(entry)
    folders = [rel for rel in DEMO_PATHS if (out / rel).is_dir()]
    return remove, folders


def _write_marker(out: Path, files: dict[str, list[int]], complete: bool) -> None:
    from tokred_train.atomic import atomic_write_text

    data: dict[str, Any] = {"format": _FORMAT, "version": 1, "complete": complete}
    data["files"] = files
    atomic_write_text(out / MARKER, json.dumps(data, indent=1, sort_keys=True) + "\n")


def claim_folder(out: Path, force: bool = False) -> None:
    """Make `out` ready for a demo: refuse it (TokredError naming the folder or the file in
    the way, nothing changed), or remove the files an earlier demo wrote there (and the
    folders they leave empty), then write an empty marker. `force`: a non-empty folder
    that holds no earlier demo is used too; its files stay untouched."""
    remove, folders = _earlier_files(out, force)
    for rel in remove:
        (out / rel).unlink()
    for rel in folders:  # only empty folders go: rmdir refuses any other
        for root, _dirs, _files in os.walk(out / rel, topdown=False):
            if not any(Path(root).iterdir()):
                Path(root).rmdir()
    out.mkdir(parents=True, exist_ok=True)
    _write_marker(out, {}, complete=False)


def record_files(out: Path, complete: bool) -> None:
    """List in the marker every file now under DEMO_PATHS (claim_folder left none there
    that the demo did not write); `complete`: the demo finished."""
    files = {}
    for rel in DEMO_PATHS:
        for entry in _entries(out, rel):
            path = out / entry
            if path.is_file() and not path.is_symlink():
                files[entry] = _stamp(path)
    _write_marker(out, files, complete)
