"""Checkpoints that survive a crash at any moment, and an exact resume.

Layout of `run_dir/checkpoints/`:

    step-000120/        model.safetensors   trainable weights (all of them in full fine-tuning,
                                            the LoRA adapters with peft), by parameter name
                        optimizer.pt        AdamW state
                        trainer_state.pt    scheduler, step, data position, RNG states
                                            (python, numpy, torch, CUDA)
                        run.json            the run's config and package versions
                                            (run/provenance.py)
                        COMPLETE            JSON marker, written last
    latest              text: the name of the newest complete checkpoint

A checkpoint is written into a temporary folder `.tmp-step-000120-<pid>` inside
checkpoints/, every file fsynced, the marker last, then renamed into place with
`os.replace` (atomic on one file system); `latest` is replaced atomically after that. A
folder without its COMPLETE marker (or a `.tmp-*` folder) is never read: a crash mid-write
leaves the previous checkpoint as the newest one.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import random
import re
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tokred_core import TokredError
from torch import nn

from ..atomic import atomic_write_text, default_file_mode, fsync_dir
from .integrity import check_weight_names, damage, describe_files
from .provenance import RUN_FILE

log = logging.getLogger(__name__)

__all__ = [
    "CHECKPOINT_DIR",
    "MARKER",
    "LATEST",
    "CheckpointInfo",
    "save_checkpoint",
    "commit_checkpoint",
    "checkpoint_tmp",
    "trainer_state",
    "find_latest_checkpoint",
    "scan_checkpoints",
    "list_checkpoints",
    "load_checkpoint",
    "trainable_state_dict",
    "capture_rng_state",
    "restore_rng_state",
    "remove_partial_checkpoints",
    "checkpoint_name",
]

CHECKPOINT_DIR = "checkpoints"
MARKER = "COMPLETE"
LATEST = "latest"
WEIGHTS = "model.safetensors"
OPTIMIZER = "optimizer.pt"
STATE = "trainer_state.pt"
_NAME = re.compile(r"^step-(\d+)$")
_OS_ERROR = re.compile(r"os error (\d+)")


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    step: int


def checkpoint_name(step: int) -> str:
    return f"step-{step:06d}"


# ---- pieces of state --------------------------------------------------------------------------
def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Trainable parameters by name, each storage once (a tied weight is saved under its
    first name), detached and contiguous."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        out[name] = p.detach().contiguous()
    return out


def capture_rng_state() -> dict[str, Any]:
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np.asarray(np_state["state"]["key"]).astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(_as_tuple(state["python"]))
    np_state = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": np_state["bit_generator"],
            "state": {"key": np_state["key"].numpy().astype(np.uint32), "pos": np_state["pos"]},
            "has_gauss": np_state["has_gauss"],
            "gauss": np_state["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_as_tuple(v) for v in value)
    if isinstance(value, tuple):
        return tuple(_as_tuple(v) for v in value)
    return value


# ---- writing ------------------------------------------------------------------------------------
def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _torch_save(obj: Any, path: Path) -> None:
    # Through a Python file, so that a failed write (a full disk) is an OSError that says
    # so; torch's own file writer reports it as "unexpected pos" in inline_container.cc.
    with open(path, "wb") as f:
        torch.save(obj, f)


def _write_files(
    tmp: Path,
    files: dict[str, Callable[[Path], None]],
    step: int,
    writing: list[Path],
    written: tuple[str, ...] = (),
) -> None:
    """Each file's writer, then fsync, then the marker with sizes and checksums (of these
    and of `written`, already in `tmp`); `writing` holds the path being written (for the
    error of a failed write)."""
    for name, write in files.items():
        writing[:] = [tmp / name]
        write(tmp / name)
        os.chmod(tmp / name, default_file_mode())  # safetensors writes 0600, torch 0644
        _fsync_file(tmp / name)
    writing[:] = [tmp / MARKER]
    for name in written:
        _fsync_file(tmp / name)
    names = [*written, *files]
    marker = {"step": step, "files": describe_files(tmp, names), "time": time.time()}
    atomic_write_text(tmp / MARKER, json.dumps(marker) + "\n")
    fsync_dir(tmp)


def _os_reason(exc: BaseException | None) -> str | None:
    """The OS's reason for a failed write, looking through the chain: torch.save's own
    error on closing the archive ("unexpected pos") hides the OSError of the write."""
    for _ in range(8):
        if exc is None:
            return None
        if isinstance(exc, OSError):
            return exc.strerror or str(exc)
        if type(exc).__name__ == "SafetensorError" and (m := _OS_ERROR.search(str(exc))):
            return os.strerror(int(m.group(1)))
        exc = exc.__cause__ or exc.__context__
    return None


def _write_failure(exc: BaseException, path: Path, root: Path) -> TokredError | None:
    """One line for a checkpoint write the OS refused (a full disk, a quota, a lost mount):
    what was being written, the OS's reason, and that the newest complete one is safe.
    None for anything else (a bug keeps its traceback)."""
    reason = _os_reason(exc)
    if reason is None:
        return None
    newest = list_checkpoints(root.parent)
    safe = (
        f"the newest complete checkpoint, {newest[-1].path}, is safe"
        if newest
        else ("no complete checkpoint was written before")
    )
    return TokredError(f"cannot write checkpoint file {path}: {reason}; {safe}")


def trainer_state(step: int, scheduler: Any, extra: Mapping[str, Any] | None) -> dict[str, Any]:
    """trainer_state.pt: the step, the schedule, the RNG states and `extra` (data position)."""
    return {
        "step": step,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "rng": capture_rng_state(),
        **(dict(extra) if extra else {}),
    }


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    extra: Mapping[str, Any] | None = None,
    keep: int = 0,
    provenance: Mapping[str, Any] | None = None,
) -> Path:
    """Write checkpoint `step` atomically, point `latest` at it, keep the newest `keep`.
    `provenance` (checkpoint_provenance: the run's config and versions) goes to run.json.
    A write the OS refuses (ENOSPC...) is one TokredError; nothing partial is left."""
    state = trainer_state(step, scheduler, extra)
    weights = trainable_state_dict(model)
    files: dict[str, Callable[[Path], None]] = {
        WEIGHTS: lambda f: save_file(weights, str(f), metadata={"step": str(step)}),
        OPTIMIZER: lambda f: _torch_save(optimizer.state_dict(), f),
        STATE: lambda f: _torch_save(state, f),
    }
    return commit_checkpoint(run_dir, step, files, keep, provenance)


def checkpoint_tmp(run_dir: str | Path, step: int, tag: str | None = None) -> Path:
    """The temporary folder checkpoint `step` is written into (`tag`: this process's id
    by default; a sharded checkpoint's ranks share one tag)."""
    return Path(run_dir) / CHECKPOINT_DIR / f".tmp-{checkpoint_name(step)}-{tag or os.getpid()}"


def commit_checkpoint(
    run_dir: str | Path,
    step: int,
    files: dict[str, Callable[[Path], None]],
    keep: int = 0,
    provenance: Mapping[str, Any] | None = None,
    written: tuple[str, ...] = (),
    tmp: Path | None = None,
) -> Path:
    """Each of `files` (name -> writer) into the temporary folder, then the marker (sizes
    and checksums of those and of `written`, files already in `tmp`: a sharded
    checkpoint's shards), then the rename into place, `latest`, and the pruning to `keep`.
    `tmp` None: a fresh folder of this process; given, it already holds `written`."""
    root = Path(run_dir) / CHECKPOINT_DIR
    name = checkpoint_name(step)
    final = root / name
    fresh = tmp is None
    tmp = checkpoint_tmp(run_dir, step) if tmp is None else tmp
    files = dict(files)
    if provenance is not None:
        files[RUN_FILE] = lambda f: atomic_write_text(f, json.dumps(provenance, indent=1) + "\n")
    writing = [tmp]
    try:
        root.mkdir(parents=True, exist_ok=True)
        if fresh:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir()
        _write_files(tmp, files, step, writing, written)
        writing[:] = [final]
        if final.exists():  # an older complete copy of this step: swap it out, then drop it
            old = root / f".old-{name}-{os.getpid()}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        fsync_dir(root)
        writing[:] = [root / LATEST]
        atomic_write_text(root / LATEST, name + "\n")
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        failure = _write_failure(exc, writing[0], root)
        if failure is not None:
            raise failure from None
        raise
    if keep > 0:
        for info in list_checkpoints(run_dir)[:-keep]:
            if info.path != final:
                shutil.rmtree(info.path, ignore_errors=True)
    return final


def remove_partial_checkpoints(run_dir: str | Path) -> list[Path]:
    """Delete leftovers of interrupted writes (`.tmp-*`, `.old-*`); a step folder without
    its marker is not ours to delete and is set aside."""
    root = Path(run_dir) / CHECKPOINT_DIR
    removed = []
    if not root.is_dir():
        return removed
    for child in root.iterdir():
        if not child.is_dir():
            continue
        if child.name.startswith((".tmp-", ".old-")):  # our own, cut short by a crash
            shutil.rmtree(child, ignore_errors=True)
            removed.append(child)
        elif _NAME.match(child.name) and not (child / MARKER).is_file():
            # The writer renames a folder into place only after its marker: this one was
            # damaged by hand, and may hold intact weights. Kept, out of the way.
            _set_aside(child, f"no {MARKER} marker")
    return removed


def _set_aside(path: Path, reason: str) -> Path:
    """Rename a damaged checkpoint to `damaged-<name>-<time>` (never deleted) and say so."""
    aside = path.with_name(f"damaged-{path.name}-{int(time.time())}")
    os.replace(path, aside)
    log.warning("checkpoint %s is damaged (%s): moved aside to %s", path, reason, aside.name)
    return aside


# ---- reading ------------------------------------------------------------------------------------
def _complete(path: Path) -> CheckpointInfo | None:
    """The checkpoint at `path` if it looks whole: marker, files and their sizes (the
    checksums are read only for the one a run loads: find_latest_checkpoint)."""
    m = _NAME.match(path.name)
    if not m or not path.is_dir():
        return None
    step = int(m.group(1))
    return (
        CheckpointInfo(path, step) if damage(path, MARKER, step, checksums=False) is None else None
    )


def list_checkpoints(run_dir: str | Path) -> list[CheckpointInfo]:
    """Complete checkpoints, oldest first."""
    root = Path(run_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = [info for child in root.iterdir() if (info := _complete(child)) is not None]
    return sorted(found, key=lambda i: i.step)


def scan_checkpoints(run_dir: str | Path) -> tuple[CheckpointInfo | None, list[tuple[Path, str]]]:
    """(the newest whole checkpoint, checksums verified, or None; each newer damaged one
    with what is wrong with it). Reads only: evaluation uses it as it is, a resume sets
    the damaged ones aside (find_latest_checkpoint)."""
    root = Path(run_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return None, []
    steps = sorted(
        ((int(m.group(1)), child) for child in root.iterdir() if (m := _NAME.match(child.name))),
        reverse=True,
    )
    damaged: list[tuple[Path, str]] = []
    for step, path in steps:
        if not path.is_dir():
            continue
        reason = damage(path, MARKER, step)
        if reason is None:
            return CheckpointInfo(path, step), damaged
        damaged.append((path, reason))
    return None, damaged


def find_latest_checkpoint(run_dir: str | Path) -> CheckpointInfo | None:
    """The newest whole checkpoint, checksums verified. Each newer one that is damaged
    (a missing or truncated file, a file that does not match its checksum, a bad marker)
    is renamed aside with a one-line warning saying what is wrong, and the search falls
    back to the next older one."""
    pointer = Path(run_dir) / CHECKPOINT_DIR / LATEST
    if pointer.is_file():
        name = pointer.read_text(encoding="utf-8", errors="replace").strip()
        # Only a checkpoint folder of this run: a hand-edited pointer to elsewhere is ignored.
        if not (name and Path(name).name == name and _NAME.match(name)):
            log.warning("%s names %r, not a checkpoint of this run: ignored", pointer, name)
    newest, damaged = scan_checkpoints(run_dir)
    for path, reason in damaged:
        _set_aside(path, reason)
    return newest


def _read(path: Path, reader: Callable[[Path], Any]) -> Any:
    """`reader(path)`, with a file that cannot be read as one line naming it (a marker
    from before checksums does not catch a damaged file before this)."""
    try:
        return reader(path)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        what = " ".join(str(exc).split())[:200]
        raise TokredError(f"{path} cannot be read ({type(exc).__name__}: {what})") from None


def load_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    map_location: torch.device | str = "cpu",
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Load weights (and optimizer, scheduler, RNG states) in place; returns the trainer state."""
    path = Path(path)
    if _complete(path) is None:
        raise TokredError(f"{path} is not a complete checkpoint (no {MARKER} marker)")
    weights = _read(path / WEIGHTS, lambda f: load_file(str(f), device=str(map_location)))
    params = dict(model.named_parameters())
    check_weight_names(path, weights, trainable_state_dict(model), params)
    wrong = next((n for n, t in weights.items() if t.shape != params[n].shape), None)
    if wrong is not None:
        raise TokredError(
            f"{path}: {wrong} is {tuple(weights[wrong].shape)} in the checkpoint but "
            f"{tuple(params[wrong].shape)} in this model; use the config the run was trained with"
        )
    with torch.no_grad():
        for name, tensor in weights.items():
            params[name].copy_(tensor)
    state = _read(path / STATE, lambda f: torch.load(f, map_location="cpu", weights_only=True))
    if optimizer is not None:
        optimizer.load_state_dict(
            _read(
                path / OPTIMIZER,
                lambda f: torch.load(f, map_location=map_location, weights_only=True),
            )
        )
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    if restore_rng:
        restore_rng_state(state["rng"])
    return state
