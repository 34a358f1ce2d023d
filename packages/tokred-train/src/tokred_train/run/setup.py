"""Everything a training run holds before its first step: the device and process group,
the run folder (and the checkpoint it resumes from), the data and model, the module the
step runs (DDP-wrapped under torchrun), the optimizer, the schedule and the sampler.

Order matters and is kept here once: the device before the process group, the model
family's check before any data or weights load, the resume check before the run folder is
written, the model and data (`build_run`), then the optimizer state of the checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokred_core import TokredError
from torch import nn

from ..built_run import VOCAB_FILE, VQ_DIR, BuiltRun, build_run
from ..config import TrainConfig, config_to_dict, save_config
from ..config.loader import read_yaml
from ..data.training_data import TrainData
from ..families import check_trainable, hf_model_type
from ..model.builder import resolve_device
from .checkpoint import (
    CheckpointInfo,
    find_latest_checkpoint,
    list_checkpoints,
    remove_partial_checkpoints,
    scan_checkpoints,
)
from .conflict import CONFLICT_FILE
from .distributed import DistInfo, barrier, dist_info, init_distributed
from .gate import GATE_FILE
from .log import METRICS_FILE, SAMPLES_FILE, VALIDATION_FILE, truncate_jsonl
from .optim import build_optimizer, build_scheduler
from .provenance import RUN_FILE, check_same_run, read_provenance, version_changes
from .sampler import MixedBatchSampler
from .sharded_checkpoint import load_to_resume
from .sharding import check_sharding, is_sharded, shard_step_module
from .step import TrainStep

__all__ = [
    "CONFIG_FILE",
    "RunSetup",
    "data_position",
    "seed_everything",
    "setup_run",
]

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"


@dataclass
class RunSetup:
    """A run ready for its first step (the resumed one's, when it resumes)."""

    config: TrainConfig
    device: torch.device
    dist: DistInfo
    run_dir: Path
    run: BuiltRun
    step_module: TrainStep
    """One micro-batch -> loss sums per task, through the patched model's submodules."""
    trained: nn.Module
    """What the step calls: `step_module`, wrapped in DistributedDataParallel under torchrun
    (or, under run.distributed=fsdp, `step_module` itself, sharded in place)."""
    params: list[nn.Parameter]
    """The trainable parameters (clipped together)."""
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    sampler: MixedBatchSampler
    start_step: int
    autocast: Callable[[], AbstractContextManager[Any]]
    bf16: bool
    resumed_from: Path | None = None
    """The checkpoint the run resumed from (None: it started at step 0)."""

    @property
    def data(self) -> TrainData:
        return self.run.data

    @property
    def model(self) -> nn.Module:
        return self.run.model


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def autocast_factory(
    bf16: bool | None, device: torch.device
) -> tuple[Callable[[], AbstractContextManager[Any]], bool]:
    """(a context factory for the forward, whether it is bf16 autocast): bf16 by default on
    CUDA devices that support it, full precision elsewhere."""
    if bf16 is None:
        bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    if not bf16:
        return contextlib.nullcontext, False
    return (lambda: torch.autocast(device.type, dtype=torch.bfloat16)), True


def _check_resume_config(run_dir: Path, resume: CheckpointInfo, config: TrainConfig) -> None:
    """Refuse a resume whose model, data, reduction or lora settings differ from the run's:
    as the checkpoint recorded them (run.json), else as config.yaml says (a checkpoint from
    before run.json). Package versions that changed are a warning: training goes on, but
    may not reproduce the uninterrupted run."""
    fix = "resume with the same settings, or start a new run.out_dir"
    now = config_to_dict(config)
    recorded = read_provenance(resume.path)
    if recorded is not None:
        check_same_run(recorded["config"], now, resume.path / RUN_FILE, fix)
        changes = version_changes(recorded)
        if changes:
            log.warning("resuming %s with other versions: %s", resume.path, ", ".join(changes))
        return
    saved_path = run_dir / CONFIG_FILE
    if saved_path.is_file():
        check_same_run(read_yaml(saved_path) or {}, now, saved_path, fix)


def _check_writable(run_dir: Path) -> None:
    """Fail on a run.out_dir that cannot hold a run before any data or model is built."""
    if run_dir.exists() and not run_dir.is_dir():
        raise TokredError(f"run.out_dir={str(run_dir)!r} is a file, not a folder")
    existing = next((p for p in (run_dir, *run_dir.parents) if p.exists()), None)
    if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise TokredError(
            f"run.out_dir={str(run_dir)!r}: cannot create it ({existing} is not a writable folder)"
        )


def _resume_point(config: TrainConfig) -> tuple[Path, CheckpointInfo | None]:
    """The run folder and the checkpoint to resume from (None: start at step 0)."""
    run_dir = Path(config.run.out_dir)
    _check_writable(run_dir)
    resume = None
    if config.run.resume:
        # Only the main process sets damaged checkpoints aside (ranks renaming the same
        # folder would race); the others skip them reading only, and agree on the newest.
        main = dist_info().is_main
        resume = find_latest_checkpoint(run_dir) if main else scan_checkpoints(run_dir)[0]
        if resume is not None:
            _check_resume_config(run_dir, resume, config)
        else:
            log.warning("run.resume: no complete checkpoint in %s, starting from step 0", run_dir)
    elif list_checkpoints(run_dir):
        raise TokredError(
            f"run.out_dir={str(run_dir)!r} already holds checkpoints; set run.resume=true to "
            "continue that run, or choose another run.out_dir"
        )
    elif (run_dir / METRICS_FILE).is_file() and not config.run.overwrite:
        raise TokredError(
            f"run.out_dir={str(run_dir)!r} holds an earlier run's {METRICS_FILE} (and no "
            "checkpoint); set run.overwrite=true to replace it, or choose another run.out_dir"
        )
    return run_dir, resume


def data_position(step: int, config: TrainConfig, dist: DistInfo) -> dict[str, Any]:
    """Where the data stream stands after `step`: what a checkpoint records so a resume
    can tell whether it will see the same batches."""
    return {
        "micro_batches": step * config.optim.grad_accum,
        "batch_size": config.optim.batch_size,
        "global_batch": config.optim.batch_size * dist.world_size,
        "grad_accum": config.optim.grad_accum,
        "world_size": dist.world_size,
        "understanding_ratio": config.data.understanding_ratio,
        "seed": config.run.seed,
    }


def _wrap_for_ranks(
    step_module: TrainStep, run: BuiltRun, dist: DistInfo, device: torch.device, bf16: bool
) -> nn.Module:
    """The module the step calls: the step module itself in one process, FSDP2-sharded
    in place under run.distributed=fsdp (sharding.py), else DDP-wrapped."""
    if not dist.distributed:
        return step_module
    if run.config.run.distributed == "fsdp":
        handle = run.built.handle
        layers = handle.adapter.layers(handle.model)
        handle.pack_runs = False  # FSDP2 hooks each layer's inputs and outputs (patch.py)
        return shard_step_module(step_module, layers, run.config, bf16)
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(
        step_module,
        device_ids=[device.index] if device.type == "cuda" else None,
        # Every trainable weight gets a gradient every step, whatever tasks a rank's
        # micro-batch holds (tokred_models.spmd), so no graph traversal is needed.
        find_unused_parameters=False,
    )


def _resume(setup: RunSetup, resume: CheckpointInfo) -> int:
    """Load the checkpoint into the model, optimizer and schedule; the step it ends."""
    state = load_to_resume(
        resume.path,
        setup.step_module,
        setup.model,
        setup.optimizer,
        setup.scheduler,
        is_sharded(setup.trained),
        map_location=setup.device,
    )
    start_step = int(state["step"])
    max_steps = setup.config.optim.max_steps
    if start_step >= max_steps:
        log.warning(
            "%s is at step %d, at or past optim.max_steps=%d: nothing is left to train",
            resume.path,
            start_step,
            max_steps,
        )
    saved = dict(state.get("data", {}))
    now = data_position(start_step, setup.config, setup.dist)
    # The batches are the same when the global batch is: 2 ranks of 4 resume as 1 of 8.
    saved.setdefault("global_batch", saved.get("batch_size", 0) * saved.get("world_size", 1))
    same = ("micro_batches", "global_batch", "grad_accum", "understanding_ratio", "seed")
    if any(saved.get(k) != now[k] for k in same):
        log.warning("resuming with a different batch layout (%s -> %s): batches differ", saved, now)
    log.info("resumed from %s (step %d)", resume.path, start_step)
    return start_step


def _write_run_folder(setup: RunSetup) -> None:
    """Main process: drop what a crash left past the resumed step, then write the config,
    the vocabulary and the image tokenizer (for evaluation and generation from the run)."""
    run_dir, data = setup.run_dir, setup.data
    run_dir.mkdir(parents=True, exist_ok=True)
    remove_partial_checkpoints(run_dir)
    truncate_jsonl(run_dir / METRICS_FILE, setup.start_step)
    truncate_jsonl(run_dir / VALIDATION_FILE, setup.start_step)
    truncate_jsonl(run_dir / SAMPLES_FILE, setup.start_step)
    truncate_jsonl(run_dir / CONFLICT_FILE, setup.start_step)
    truncate_jsonl(run_dir / GATE_FILE, setup.start_step)
    save_config(setup.config, run_dir / CONFIG_FILE)
    for obj, target in (
        (data.vocab, run_dir / VOCAB_FILE),
        (data.image_tokenizer, run_dir / VQ_DIR),
    ):
        save = getattr(obj, "save", None)
        if callable(save):
            save(target)


def setup_run(config: TrainConfig) -> RunSetup:
    """Build (or resume) everything a run needs, in the order the module docstring gives."""
    device = resolve_device(config.run.device, dist_info().local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist = init_distributed(device)
    check_sharding(config, dist, device)
    if config.model.kind == "hf":  # fail before loading data or weights
        check_trainable(hf_model_type(config.model.path))
    run_dir, resume = _resume_point(config)

    seed_everything(config.run.seed)
    run = build_run(config, device)
    # The step runs the patched base model's submodules, which LoRA patches in place.
    step_module = TrainStep(
        run.built.base,
        run.data.loss_path,
        config.strategy.distill,
        config.strategy.distill_temperature,
    )
    autocast, bf16 = autocast_factory(config.run.bf16, device)
    # Before the optimizer: FSDP2 replaces the parameters with their shards.
    trained = _wrap_for_ranks(step_module, run, dist, device, bf16)
    optimizer = build_optimizer(run.model, config.optim)
    sampler = MixedBatchSampler(
        run.data.sizes(),
        config.data.understanding_ratio,
        config.optim.batch_size,
        config.run.seed,
        dist.rank,
        dist.world_size,
    )
    setup = RunSetup(
        config=config,
        device=device,
        dist=dist,
        run_dir=run_dir,
        run=run,
        step_module=step_module,
        trained=trained,
        params=[p for p in run.model.parameters() if p.requires_grad],
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, config.optim),
        sampler=sampler,
        start_step=0,
        autocast=autocast,
        bf16=bf16,
    )
    if resume is not None:
        setup.start_step = _resume(setup, resume)
        setup.resumed_from = resume.path
    if dist.is_main:
        _write_run_folder(setup)
    barrier(dist)
    return setup
