"""Sharded checkpoints (`run.distributed=fsdp`) through torch.distributed.checkpoint (DCP),
and the loads between the two checkpoint formats.

A sharded checkpoint is the folder of checkpoint.py with the model and the optimizer in
`shards/` instead of model.safetensors and optimizer.pt:

    step-000120/  shards/           DCP: each rank's shards of the trainable weights and
                                    the AdamW state, by fully qualified name, plus .metadata
                  trainer_state.pt  scheduler, step, data position, RNG states (rank 0)
                  run.json, COMPLETE  as in checkpoint.py
                  model.safetensors the whole trainable weights, in the final checkpoint
                                    only: what a single process or from_pretrained takes

Every rank writes its shards into one temporary folder; only when all of them have
finished (agreed by a collective) does rank 0 write the rest, the marker (which records
the shards' sizes and checksums too) and rename the folder into place. A crash at any
moment leaves the previous checkpoint the newest.

Names: the weights are keyed by their name under the step module (`model.` + the name in
the Hugging Face model), whatever wraps them. DCP reshards on load, so a checkpoint of N
ranks resumes on M ranks, FSDP or DDP, or in one process; a single-process or DDP
checkpoint (model.safetensors) resumes under FSDP through a full state dict that each
rank shards (`load_full_into_sharded`).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from tokred_core import TokredError
from torch import nn

from .checkpoint import (
    CHECKPOINT_DIR,
    OPTIMIZER,
    STATE,
    WEIGHTS,
    _read,
    _torch_save,
    checkpoint_tmp,
    commit_checkpoint,
    load_checkpoint,
    restore_rng_state,
    trainable_state_dict,
    trainer_state,
)
from .distributed import DistInfo, barrier
from .integrity import check_weight_names

__all__ = [
    "SHARDS",
    "is_sharded_checkpoint",
    "load_full_into_sharded",
    "load_sharded_state",
    "load_to_resume",
    "save_sharded_checkpoint",
]

SHARDS = "shards"


def is_sharded_checkpoint(path: str | Path) -> bool:
    return (Path(path) / SHARDS).is_dir()


def _options(**kw: Any) -> Any:
    """Trainable weights only (frozen ones come from the model's own files). Not strict:
    a frozen weight is absent by design; a trainable one that the checkpoint lacks
    fails in dcp.load, which reads exactly the names asked for."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(ignore_frozen_params=True, strict=False, **kw)


def _holder(base: nn.Module) -> nn.Module:
    """A module whose only child is `base` under `model`: the step module's names
    (TrainStep registers the Hugging Face model as `model`) for a model outside one."""
    holder = nn.Module()
    holder.model = base
    return holder


def _agree(ok: bool, dist: DistInfo) -> bool:
    """Whether every rank succeeded (a collective: call it on all of them)."""
    if not dist.distributed:
        return ok
    import torch.distributed as tdist

    flag = torch.tensor([0.0 if ok else 1.0])
    tdist.all_reduce(flag)
    return float(flag) == 0.0


def save_sharded_checkpoint(
    run_dir: str | Path,
    step: int,
    step_module: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    dist: DistInfo,
    extra: Mapping[str, Any] | None = None,
    keep: int = 0,
    provenance: Mapping[str, Any] | None = None,
    export: bool = False,
) -> Path:
    """Checkpoint `step` of a sharded run; every rank calls it. `export`: also the whole
    trainable weights as model.safetensors (gathered on rank 0's CPU)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_state_dict

    tmp = checkpoint_tmp(run_dir, step, "sharded")
    if dist.is_main:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    barrier(dist)
    model_state, optim_state = get_state_dict(step_module, optimizer, options=_options())
    from torch.distributed.checkpoint.api import CheckpointException

    error: str | None = None
    try:
        dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(tmp / SHARDS))
    except (OSError, CheckpointException) as exc:
        error = _write_reason(exc, tmp)
    full = None
    if export:  # a collective too: every rank takes part, rank 0 receives
        opts = _options(full_state_dict=True, cpu_offload=True)
        full = get_model_state_dict(step_module, options=opts)
    if not _agree(error is None, dist):
        if dist.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        if error is not None:
            raise TokredError(
                f"cannot write the shards of checkpoint step {step} in {tmp}: {error}; the "
                "newest complete checkpoint is left as it was"
            )
        raise TokredError(f"another rank could not write its shards of checkpoint step {step}")
    final = Path(run_dir) / CHECKPOINT_DIR / tmp.name  # replaced below on rank 0
    failure: BaseException | None = None
    if dist.is_main:
        written = tuple(
            str(p.relative_to(tmp)) for p in sorted((tmp / SHARDS).rglob("*")) if p.is_file()
        )
        state = trainer_state(step, scheduler, extra)
        files: dict[str, Callable[[Path], None]] = {STATE: lambda f: _torch_save(state, f)}
        if full is not None:
            weights = {n.removeprefix("model."): t.contiguous() for n, t in full.items()}
            files[WEIGHTS] = lambda f: save_file(weights, str(f), metadata={"step": str(step)})
        try:
            final = commit_checkpoint(run_dir, step, files, keep, provenance, written, tmp)
        except BaseException as exc:  # told to the other ranks before it is raised here
            failure = exc
    if not _agree(failure is None, dist):
        if failure is not None:
            raise failure
        raise TokredError(f"rank 0 could not complete checkpoint step {step}")
    return Path(run_dir) / CHECKPOINT_DIR / final.name


def _write_reason(exc: BaseException, tmp: Path) -> str:
    """Why a shard write failed, in one line. DCP wraps the OS error of a write that a full
    disk cuts short in its own exception, as torch's archive writer's "unexpected pos"."""
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    last = lines[-1] if lines else type(exc).__name__
    if "unexpected pos" in last:
        free = shutil.disk_usage(tmp if tmp.exists() else tmp.parent).free
        return f"the write was cut short (a full disk or quota? {free} bytes free)"
    return last[:200]


def load_sharded_state(
    path: str | Path, module: nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> None:
    """The shards of the checkpoint at `path` into `module` (a step module, sharded or not,
    or a Hugging Face model, patched or peft-wrapped) and `optimizer`, resharded to this
    job (any world size; one process without a process group too)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_state_dict,
        set_model_state_dict,
        set_state_dict,
    )

    if not hasattr(module, "loss_path"):  # not a TrainStep: give it the step's names
        from tokred_models import patched_model

        module = _holder(patched_model(module))
    shards = str(Path(path) / SHARDS)
    if optimizer is None:
        model_state = get_model_state_dict(module, options=_options())
        _dcp_read(dcp, {"model": model_state}, shards)
        set_model_state_dict(module, model_state, options=_options())
        return
    model_state, optim_state = get_state_dict(module, optimizer, options=_options())
    _dcp_read(dcp, {"model": model_state, "optim": optim_state}, shards)
    set_state_dict(
        module,
        optimizer,
        model_state_dict=model_state,
        optim_state_dict=optim_state,
        options=_options(),
    )


def _dcp_read(dcp: Any, state: dict[str, Any], shards: str) -> None:
    """dcp.load, with a checkpoint that does not fit this model as one line."""
    from torch.distributed.checkpoint.api import CheckpointException

    try:
        dcp.load(state, checkpoint_id=shards)
    except (CheckpointException, RuntimeError, ValueError, KeyError) as exc:
        # A CheckpointException carries each rank's traceback: its last line says what.
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        what = (lines[-1] if lines else type(exc).__name__)[:200]
        raise TokredError(
            f"{shards} does not fit this model ({what}); resume with "
            "the config the run was started with"
        ) from None


def load_full_into_sharded(
    path: str | Path, step_module: nn.Module, model: nn.Module, optimizer: torch.optim.Optimizer
) -> None:
    """A single-process or DDP checkpoint (model.safetensors, optimizer.pt) into a sharded
    step module: weights renamed from `model`'s names to the step module's, the optimizer
    state from parameter order to names; each rank shards the full state it reads."""
    from torch.distributed.checkpoint.state_dict import set_state_dict

    path = Path(path)
    step_names = {id(p): n for n, p in step_module.named_parameters()}
    renamed = {n: step_names[id(p)] for n, p in model.named_parameters() if id(p) in step_names}
    weights = _read(path / WEIGHTS, lambda f: load_file(str(f)))
    names = dict(model.named_parameters())
    check_weight_names(path, weights, trainable_state_dict(model), names)
    saved = _read(path / OPTIMIZER, lambda f: torch.load(f, map_location="cpu", weights_only=True))
    order = [step_names[id(p)] for group in optimizer.param_groups for p in group["params"]]
    optim_state = {
        "state": {order[int(i)]: s for i, s in saved["state"].items()},
        "param_groups": [
            {**g, "params": [order[int(i)] for i in g["params"]]} for g in saved["param_groups"]
        ],
    }
    set_state_dict(
        step_module,
        optimizer,
        model_state_dict={renamed[n]: t for n, t in weights.items()},
        optim_state_dict=optim_state,
        options=_options(full_state_dict=True),
    )


def read_trainer_state(path: str | Path) -> dict[str, Any]:
    return _read(Path(path) / STATE, lambda f: torch.load(f, map_location="cpu", weights_only=True))


def load_to_resume(
    path: str | Path,
    step_module: nn.Module,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    sharded: bool,
    map_location: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Checkpoint `path`, of either format, into this run (`sharded`: its step module went
    through fully_shard): weights, optimizer, schedule and RNG; returns the trainer state."""
    if is_sharded_checkpoint(path):
        load_sharded_state(path, step_module, optimizer)
    elif sharded:
        load_full_into_sharded(path, step_module, model, optimizer)
    else:
        return load_checkpoint(path, model, optimizer, scheduler, map_location=map_location)
    state = read_trainer_state(path)
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    restore_rng_state(state["rng"])
    return state
