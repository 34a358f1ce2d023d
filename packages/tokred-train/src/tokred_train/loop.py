"""The unified training loop: mixed-task batches through a reduction-patched model.

    result = train(load_config("tiny-shapes.yaml", ["optim.max_steps=50"]))

One optimizer step = optim.grad_accum micro-batches. Micro-batch m holds the samples the
`MixedBatchSampler` assigns to m (a fraction data.understanding_ratio of understanding
samples), collated by `tokred_train.data.collate` into input_ids, labels, attention_mask
and a `TokenLayout`, and run through the model family's loss path (`TrainStep`: for most
models `model(input_ids, attention_mask, tokred_layout=layout)`), so every sample follows
its task's reduction plan. The loss is the cross-entropy averaged over all target tokens
of the step (every micro-batch of it); its understanding and generation parts are logged
separately. AdamW, warm-up + cosine, gradient clipping,
bfloat16 autocast on CUDA, optional gradient checkpointing.

Determinism and resume: the batch of a step depends only on (run.seed, step), the model
is built from seeds, and a checkpoint holds weights, optimizer, scheduler and RNG states,
so a run resumed from step k reproduces the losses of an uninterrupted run from step k+1.

Host synchronisation happens only at flushes (every run.log_every steps), checkpoints and
validation: per-step losses and gradient norms stay on the device until then.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from tokred_core import TokredError
from tokred_models import ReductionHandle
from torch import nn

from .checkpoint import (
    capture_rng_state,
    find_latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    remove_partial_checkpoints,
    restore_rng_state,
    save_checkpoint,
)
from .config import TrainConfig, config_to_dict, load_config, save_config
from .distributed import DistInfo, barrier, dist_info, init_distributed
from .embedded import build_train_data
from .families import check_trainable, hf_model_type
from .metrics_log import (
    METRICS_FILE,
    VALIDATION_FILE,
    MetricsLogger,
    peak_memory_bytes,
    truncate_jsonl,
)
from .model_builder import BuiltModel, build_model, resolve_device
from .optim import build_optimizer, build_scheduler
from .prefetch import Prefetcher
from .protocols import ImageTokenizer, TokenVocab
from .sampler import MixedBatchSampler
from .train_step import BatchTargets, TrainStep, batch_targets
from .training_data import TrainData
from .validation import validation_loss

__all__ = ["RunResult", "train", "seed_everything", "Evaluator"]

log = logging.getLogger(__name__)

#: evaluator(model, data, step) -> metrics, called wherever validation runs.
Evaluator = Callable[[nn.Module, TrainData, int], Mapping[str, float]]

CONFIG_FILE = "config.yaml"
SUMMARY_FILE = "summary.json"
# Sections that must match for a resume to be exact (optim and run may change).
_RESUME_SECTIONS = ("model", "data", "reduction", "lora")


@dataclass
class RunResult:
    run_dir: Path
    config: TrainConfig
    metrics: dict[str, Any]
    """Final metrics: the last step's losses and the final validation losses."""
    history: list[dict[str, Any]]
    """One row per optimizer step run by this call (the rows of metrics.jsonl)."""
    model: nn.Module
    handle: ReductionHandle
    vocab: TokenVocab
    vq: ImageTokenizer
    data: TrainData
    built: BuiltModel
    summary: dict[str, Any] = field(default_factory=dict)
    start_step: int = 0
    """The step the run started from (the resumed checkpoint's step, else 0)."""
    last_step: int = 0
    stopped_early: bool = False
    """True when stop_after_step ended the run (no final checkpoint, no summary)."""
    checkpoint: Path | None = None
    """The newest checkpoint written by this call."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _autocast_factory(bf16: bool | None, device: torch.device):
    if bf16 is None:
        bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    if not bf16:
        return contextlib.nullcontext, False
    return (lambda: torch.autocast(device.type, dtype=torch.bfloat16)), True


def _first_difference(a: Any, b: Any, prefix: str) -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            diff = _first_difference(a.get(key), b.get(key), f"{prefix}.{key}")
            if diff:
                return diff
        return None
    return None if a == b else prefix


def _check_resume_config(run_dir: Path, config: TrainConfig) -> None:
    saved_path = run_dir / CONFIG_FILE
    if not saved_path.is_file():
        return
    saved = yaml.safe_load(saved_path.read_text(encoding="utf-8")) or {}
    now = config_to_dict(config)
    for section in _RESUME_SECTIONS:
        diff = _first_difference(saved.get(section), now.get(section), section)
        if diff:
            raise TokredError(
                f"{diff}: differs from the run being resumed ({saved_path}); resume with the "
                "same model, data, reduction and lora settings, or start a new run.out_dir"
            )


def _prepare_run_dir(config: TrainConfig, dist: DistInfo):
    run_dir = Path(config.run.out_dir)
    resume = None
    if config.run.resume:
        resume = find_latest_checkpoint(run_dir)
        if resume is not None:
            _check_resume_config(run_dir, config)
        else:
            log.warning("run.resume: no complete checkpoint in %s, starting from step 0", run_dir)
    elif list_checkpoints(run_dir):
        raise TokredError(
            f"run.out_dir={str(run_dir)!r} already holds checkpoints; set run.resume=true to "
            "continue that run, or choose another run.out_dir"
        )
    return run_dir, resume


def _micro_batch(
    data: TrainData, sampler: MixedBatchSampler, micro: int
) -> tuple[dict[str, Any], BatchTargets]:
    batch = data.collate(sampler.draw(micro))
    return batch, batch_targets(batch, data.loss_path)


def _save_artifacts(run_dir: Path, data: TrainData) -> None:
    """The vocabulary and image tokenizer, for evaluation and generation from the run."""
    for obj, target in (
        (data.vocab, run_dir / "vocab.json"),
        (data.image_tokenizer, run_dir / "vq"),
    ):
        save = getattr(obj, "save", None)
        if callable(save):
            save(target)


def train(
    config: TrainConfig | Mapping[str, Any] | str | Path,
    *,
    overrides: Sequence[str] = (),
    stop_after_step: int | None = None,
    evaluator: Evaluator | None = None,
) -> RunResult:
    """Train as `config` says; returns the run's result (see RunResult).

    stop_after_step=k ends the run right after step k (after its checkpoint, if one is due),
    without a final checkpoint, validation or summary: a crash, for tests of resume. With k at
    or below the starting step nothing is trained: the result holds the built (or resumed)
    model, data and vocabulary.
    evaluator(model, data, step) adds metrics wherever validation runs.
    """
    if not isinstance(config, TrainConfig) or overrides:
        config = load_config(config, overrides)
    threads = torch.get_num_threads()
    if config.run.threads is not None:
        torch.set_num_threads(config.run.threads)
    try:
        return _train(config, stop_after_step, evaluator)
    finally:
        torch.set_num_threads(threads)


def _train(
    config: TrainConfig, stop_after_step: int | None, evaluator: Evaluator | None
) -> RunResult:
    started = time.perf_counter()
    dist = dist_info()
    device = resolve_device(config.run.device, dist.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist = init_distributed(device)
    if config.model.kind == "hf":  # fail before loading data or weights
        check_trainable(hf_model_type(config.model.path))
    run_dir, resume = _prepare_run_dir(config, dist)

    seed_everything(config.run.seed)
    if config.model.kind == "tiny":  # the vocabulary (from the data) sizes the model
        data = build_train_data(config)
        built = build_model(config, data.vocab.vocab_size, device)
    else:  # the model brings its vocabulary and image tokenizer
        built = build_model(config, None, device)
        data = build_train_data(config, built.base)
    rows = built.base.get_input_embeddings().num_embeddings
    if data.vocab.vocab_size > rows:
        raise TokredError(
            f"the vocabulary has {data.vocab.vocab_size} ids but the model embeds only {rows}"
        )
    model = built.model
    # The step runs built.base's submodules, which LoRA patches in place.
    step_module = TrainStep(built.base, data.loss_path)
    trained: nn.Module = step_module
    if dist.distributed:
        from torch.nn.parallel import DistributedDataParallel

        trained = DistributedDataParallel(
            step_module,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True,  # reduced layers skip the projections a batch lacks
        )
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(model, config.optim)
    scheduler = build_scheduler(optimizer, config.optim)
    opt = config.optim
    sampler = MixedBatchSampler(
        data.sizes(),
        config.data.understanding_ratio,
        opt.batch_size,
        config.run.seed,
        dist.rank,
        dist.world_size,
    )

    start_step = 0
    if resume is not None:
        state = load_checkpoint(resume.path, model, optimizer, scheduler, map_location=device)
        start_step = int(state["step"])
        saved = state.get("data", {})
        now = _data_position(start_step, config, dist)
        if {k: saved.get(k) for k in now} != now:
            log.warning(
                "resuming with a different batch layout (%s -> %s): batches differ", saved, now
            )
        log.info("resumed from %s (step %d)", resume.path, start_step)
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        remove_partial_checkpoints(run_dir)
        truncate_jsonl(run_dir / METRICS_FILE, start_step)
        truncate_jsonl(run_dir / VALIDATION_FILE, start_step)
        save_config(config, run_dir / CONFIG_FILE)
        _save_artifacts(run_dir, data)
    barrier(dist)

    autocast, bf16 = _autocast_factory(config.run.bf16, device)
    logger = MetricsLogger(
        run_dir,
        enabled=dist.is_main,
        tensorboard=config.run.tensorboard,
        progress=config.run.progress,
        total_steps=opt.max_steps,
        initial_step=start_step,
    )
    clip = opt.clip_norm if opt.clip_norm else math.inf
    eval_bs = config.eval.batch_size or opt.batch_size

    def validate(step: int) -> dict[str, float]:
        t = time.perf_counter()
        rng = capture_rng_state()  # an evaluator that samples must not shift the training RNG
        try:
            metrics = validation_loss(
                step_module, data, config.eval.max_samples, eval_bs, device, autocast
            )
            if evaluator is not None:
                metrics.update(evaluator(model, data, step))
        finally:
            restore_rng_state(rng)
        logger.log_validation(step, metrics)
        window["pause"] += time.perf_counter() - t
        return metrics

    def checkpoint(step: int) -> Path | None:
        t = time.perf_counter()
        path = _checkpoint(run_dir, step, model, optimizer, scheduler, config, dist)
        window["pause"] += time.perf_counter() - t
        return path

    history: list[dict[str, Any]] = []
    pending: list[dict[str, Any]] = []
    last_checkpoint: Path | None = None
    val_metrics: dict[str, float] = {}
    train_start = time.perf_counter()
    # Throughput windows run from flush to flush, minus validation and checkpoint time.
    window = {"start": train_start, "steps": 0, "pause": 0.0}
    step_time_total = 0.0
    first_step_time: float | None = None
    step = start_step

    def flush() -> None:
        nonlocal first_step_time, step_time_total
        if not pending:
            return
        dev = pending[0]["sums"].device
        # Per step: loss sums (2), target counts (2), tokens, samples: summed over ranks.
        local = torch.stack(
            [
                torch.cat(
                    [
                        p["sums"].double(),
                        torch.tensor(
                            [*p["counts"], p["tokens"], p["samples"]],
                            dtype=torch.float64,
                            device=dev,
                        ),
                    ]
                )
                for p in pending
            ]
        )
        if dist.distributed:
            import torch.distributed as tdist

            tdist.all_reduce(local)
        norms = torch.stack([p["grad_norm"].reshape(()).double().to(dev) for p in pending])
        values = torch.cat([local, norms[:, None]], dim=1).tolist()  # the one sync per window
        now = time.perf_counter()
        span = max(now - window["start"] - window["pause"], 1e-9)
        step_time_total += span
        if first_step_time is None:
            first_step_time = span / max(window["steps"], 1)
        window_tokens = sum(v[4] for v in values)
        window_samples = sum(v[5] for v in values)
        for p, (su, sg, cu, cg, tokens, samples, gn) in zip(pending, values, strict=True):
            cu, cg = int(cu), int(cg)
            row = {
                "step": p["step"],
                "loss": (su + sg) / max(cu + cg, 1),
                "loss_understanding": su / cu if cu else None,
                "loss_generation": sg / cg if cg else None,
                "lr": p["lr"],
                "grad_norm": gn,
                "tokens": int(tokens),
                "samples": int(samples),
                "tokens_per_s": window_tokens / span,
                "samples_per_s": window_samples / span,
                "step_time_s": span / max(window["steps"], 1),
                "elapsed_s": now - train_start,
            }
            history.append(row)
        logger.log_steps(history[-len(pending) :])
        pending.clear()
        window.update(start=now, steps=0, pause=0.0)

    # stop_after_step <= the starting step: build (and resume) everything, run no step.
    stopped = stop_after_step is not None and stop_after_step <= start_step
    last_step = opt.max_steps if not stopped else start_step
    depth = config.run.prefetch
    if depth is None:
        depth = 2 if device.type == "cuda" else 0
    prefetch = Prefetcher(lambda m: _micro_batch(data, sampler, m), depth)
    try:
        model.train()
        for step in range(start_step + 1, last_step + 1):
            micros = [prefetch.get((step - 1) * opt.grad_accum + i) for i in range(opt.grad_accum)]
            total = max(sum(sum(t.counts) for _, t in micros), 1)
            sums = torch.zeros(2, dtype=torch.float32, device=device)
            tokens = samples = 0
            for i, (batch, targets) in enumerate(micros):
                last = i == len(micros) - 1
                sync = (
                    trained.no_sync() if dist.distributed and not last else contextlib.nullcontext()
                )
                with sync:
                    with autocast():
                        part = trained(batch, targets.to(device))
                    (part.sum() / total).backward()
                sums += part.detach()
                tokens += int(batch["attention_mask"].sum())
                samples += batch["input_ids"].shape[0]
            grad_norm = torch.nn.utils.clip_grad_norm_(params, clip)
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            counts = (
                sum(t.counts[0] for _, t in micros),
                sum(t.counts[1] for _, t in micros),
            )
            pending.append(
                {
                    "step": step,
                    "sums": sums,
                    "counts": counts,
                    "grad_norm": grad_norm.detach(),
                    "lr": lr,
                    "tokens": tokens,
                    "samples": samples,
                }
            )
            window["steps"] += 1
            stop_now = stop_after_step is not None and step >= stop_after_step
            if (
                step % config.run.log_every == 0
                or step == start_step + 1
                or step == opt.max_steps
                or stop_now
            ):
                flush()
            if config.run.ckpt_every and step % config.run.ckpt_every == 0:
                last_checkpoint = checkpoint(step)
            if config.eval.every and step % config.eval.every == 0 and step != opt.max_steps:
                validate(step)
            if stop_now:
                stopped = True
                break
        flush()
        last_step = step
        if not stopped:
            due = config.run.save_final and last_step > start_step
            if due and not (config.run.ckpt_every and last_step % config.run.ckpt_every == 0):
                last_checkpoint = checkpoint(last_step)
            if config.eval.at_end:
                val_metrics = validate(last_step)
    finally:
        prefetch.close()
        logger.close()

    final: dict[str, Any] = {}
    if history:
        final.update({k: history[-1][k] for k in ("loss", "loss_understanding", "loss_generation")})
    final.update(val_metrics)
    result = RunResult(
        run_dir=run_dir,
        config=config,
        metrics=final,
        history=history,
        model=model,
        handle=built.handle,
        vocab=data.vocab,
        vq=data.image_tokenizer,
        data=data,
        built=built,
        start_step=start_step,
        last_step=last_step,
        stopped_early=stopped,
        checkpoint=last_checkpoint,
    )
    if not stopped:
        result.summary = _summary(
            result,
            device,
            bf16,
            dist,
            step_time_total,
            time.perf_counter() - started,
            first_step_time,
        )
        logger.enabled = dist.is_main
        logger.write_json(SUMMARY_FILE, result.summary)
    return result


def _data_position(step: int, config: TrainConfig, dist: DistInfo) -> dict[str, Any]:
    return {
        "micro_batches": step * config.optim.grad_accum,
        "batch_size": config.optim.batch_size,
        "grad_accum": config.optim.grad_accum,
        "world_size": dist.world_size,
        "understanding_ratio": config.data.understanding_ratio,
        "seed": config.run.seed,
    }


def _checkpoint(run_dir, step, model, optimizer, scheduler, config, dist) -> Path | None:
    path = None
    if dist.is_main:
        path = save_checkpoint(
            run_dir,
            step,
            model,
            optimizer,
            scheduler,
            extra={"data": _data_position(step, config, dist)},
            keep=config.run.keep_checkpoints,
        )
    barrier(dist)
    return path


def _summary(
    result: RunResult,
    device: torch.device,
    bf16: bool,
    dist: DistInfo,
    train_time: float,
    wall_time: float,
    first_step_time: float | None,
) -> dict[str, Any]:
    rows = result.history
    steps = len(rows)
    tokens = sum(r["tokens"] for r in rows)
    samples = sum(r["samples"] for r in rows)
    steady = [r["step_time_s"] for r in rows[1:]]
    memory, memory_kind = peak_memory_bytes(device)
    built = result.built
    cfg = result.config
    return {
        "run_dir": str(result.run_dir),
        "steps": result.last_step,
        "start_step": result.start_step,
        "steps_this_run": steps,
        "wall_time_s": wall_time,
        "train_time_s": train_time,
        # train_time_s counts optimizer steps only (no start-up, validation or checkpoints)
        "tokens_per_s": tokens / train_time if train_time > 0 else None,
        "samples_per_s": samples / train_time if train_time > 0 else None,
        "step_time_s": (sum(steady) / len(steady)) if steady else first_step_time,
        "first_step_time_s": first_step_time,
        "peak_memory_bytes": memory,
        "peak_memory_kind": memory_kind,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(),
        "world_size": dist.world_size,
        "bf16_autocast": bf16,
        "model_type": built.model_type,
        "num_layers": built.num_layers,
        "trainable_parameters": built.trainable_parameters,
        "total_parameters": built.total_parameters,
        "quantized_modules": len(built.quantized_modules),
        "lora_modules": len(built.lora.adapted) if built.lora else 0,
        "lora_image_projections": len(built.lora.image_projections) if built.lora else 0,
        "policies": {
            task.name.lower(): {"policy": p.name, "config": dataclasses.asdict(p.config)}
            for task, p in built.handle.policies.policies.items()
        },
        "sharing": built.handle.sharing.value,
        "data": result.data.info,
        "final": result.metrics,
        "config": config_to_dict(cfg),
    }
