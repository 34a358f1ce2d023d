"""Checkpoints that survive a crash at any moment, and an exact resume.

Layout of `run_dir/checkpoints/`:

    step-000120/        model.safetensors   trainable weights (all of them in full fine-tuning,
                                            the LoRA adapters with peft), by parameter name
                        optimizer.pt        AdamW state
                        trainer_state.pt    scheduler, step, data position, RNG states
                                            (python, numpy, torch, CUDA)
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
import random
import re
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tokred_core import TokredError
from torch import nn

from ..atomic import atomic_write_text, fsync_dir

log = logging.getLogger(__name__)

__all__ = [
    "CHECKPOINT_DIR",
    "MARKER",
    "LATEST",
    "CheckpointInfo",
    "save_checkpoint",
    "find_latest_checkpoint",
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


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    extra: Mapping[str, Any] | None = None,
    keep: int = 0,
) -> Path:
    """Write checkpoint `step` atomically, point `latest` at it, keep the newest `keep`."""
    root = Path(run_dir) / CHECKPOINT_DIR
    root.mkdir(parents=True, exist_ok=True)
    name = checkpoint_name(step)
    final = root / name
    tmp = root / f".tmp-{name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        save_file(trainable_state_dict(model), str(tmp / WEIGHTS), metadata={"step": str(step)})
        torch.save(optimizer.state_dict(), tmp / OPTIMIZER)
        state = {
            "step": step,
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "rng": capture_rng_state(),
            **(dict(extra) if extra else {}),
        }
        torch.save(state, tmp / STATE)
        for f in (WEIGHTS, OPTIMIZER, STATE):
            _fsync_file(tmp / f)
        marker = {"step": step, "files": [WEIGHTS, OPTIMIZER, STATE], "time": time.time()}
        atomic_write_text(tmp / MARKER, json.dumps(marker) + "\n")
        fsync_dir(tmp)
        if final.exists():  # an older complete copy of this step: swap it out, then drop it
            old = root / f".old-{name}-{os.getpid()}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(root / LATEST, name + "\n")
    if keep > 0:
        for info in list_checkpoints(run_dir)[:-keep]:
            if info.path != final:
                shutil.rmtree(info.path, ignore_errors=True)
    return final


def remove_partial_checkpoints(run_dir: str | Path) -> list[Path]:
    """Delete leftovers of interrupted writes (`.tmp-*`, `.old-*`, folders without marker)."""
    root = Path(run_dir) / CHECKPOINT_DIR
    removed = []
    if not root.is_dir():
        return removed
    for child in root.iterdir():
        if not child.is_dir():
            continue
        partial = child.name.startswith((".tmp-", ".old-")) or (
            _NAME.match(child.name) and not (child / MARKER).is_file()
        )
        if partial:
            shutil.rmtree(child, ignore_errors=True)
            removed.append(child)
    return removed


# ---- reading ------------------------------------------------------------------------------------
def _complete(path: Path) -> CheckpointInfo | None:
    m = _NAME.match(path.name)
    marker = path / MARKER
    if not m or not path.is_dir() or not marker.is_file():
        return None
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    step = int(m.group(1))
    if data.get("step") != step or not all((path / f).is_file() for f in data.get("files", [])):
        return None
    return CheckpointInfo(path, step)


def list_checkpoints(run_dir: str | Path) -> list[CheckpointInfo]:
    """Complete checkpoints, oldest first."""
    root = Path(run_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = [info for child in root.iterdir() if (info := _complete(child)) is not None]
    return sorted(found, key=lambda i: i.step)


def find_latest_checkpoint(run_dir: str | Path) -> CheckpointInfo | None:
    """The checkpoint `latest` names if it is complete, else the newest complete one."""
    root = Path(run_dir) / CHECKPOINT_DIR
    pointer = root / LATEST
    if pointer.is_file():
        name = pointer.read_text(encoding="utf-8", errors="replace").strip()
        # Only a checkpoint folder of this run: a hand-edited pointer to elsewhere is ignored.
        inside = bool(name) and Path(name).name == name and name not in (".", "..")
        if not inside:
            log.warning("%s names %r, not a checkpoint of this run: ignored", pointer, name)
        named = _complete(root / name) if inside else None
        if named is not None:
            newest = list_checkpoints(run_dir)
            # A newer complete checkpoint means the pointer update itself was interrupted.
            return newest[-1] if newest and newest[-1].step > named.step else named
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


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
    weights = load_file(str(path / WEIGHTS), device=str(map_location))
    params = dict(model.named_parameters())
    missing = [n for n in trainable_state_dict(model) if n not in weights]
    unknown = [n for n in weights if n not in params]
    if missing or unknown:
        what = f"missing {missing[0]!r}" if missing else f"unexpected {unknown[0]!r}"
        raise TokredError(
            f"{path}: the checkpoint does not fit this model ({what}); resume with the config "
            "the run was started with"
        )
    with torch.no_grad():
        for name, tensor in weights.items():
            params[name].copy_(tensor)
    state = torch.load(path / STATE, map_location="cpu", weights_only=True)
    if optimizer is not None:
        optimizer.load_state_dict(
            torch.load(path / OPTIMIZER, map_location=map_location, weights_only=True)
        )
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    if restore_rng:
        restore_rng_state(state["rng"])
    return state
