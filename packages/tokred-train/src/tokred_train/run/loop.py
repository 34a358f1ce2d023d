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

run.conflict_every adds, between steps, the tasks' gradient conflict on a fixed probe
(run/conflict.py: conflict.jsonl), without changing the training.

The strategy section (config/strategy.py) changes the step: unreduced full steps and
self-distillation (full_steps.py, planned with each micro-batch), gradient surgery
(surgery.py: each micro-batch as one sub-batch per task, accumulate.py) and the conflict
gate (gate.py: reduction off in the layers where the tasks' gradients conflict).
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from tokred_core import RunInterrupted, TokredError
from torch import nn

from ..config import TrainConfig, config_to_dict, load_config
from ..data.training_data import TrainData
from .accumulate import backward_micro_batches
from .checkpoint import (
    CHECKPOINT_DIR,
    capture_rng_state,
    checkpoint_name,
    restore_rng_state,
    save_checkpoint,
)
from .conflict import CONFLICT_FILE, ConflictProbe
from .distributed import barrier, global_sum
from .gate import GATE_FILE
from .interrupt import InterruptWatch, resume_hint
from .log import SAMPLES_FILE, MetricsLogger
from .micro_batch import MicroBatch, micro_batch
from .nonfinite import NonFiniteGuard
from .prefetch import Prefetcher
from .provenance import checkpoint_provenance
from .result import RunResult
from .setup import RunSetup, data_position, seed_everything, setup_run
from .sharded_checkpoint import save_sharded_checkpoint
from .sharding import full_value, is_sharded, reshard
from .step import BatchTargets, batch_targets
from .strategies import strategy_parts
from .summary import SUMMARY_FILE, run_summary
from .validation import validation_loss
from .window import MetricsWindow, StepRecord

__all__ = ["RunResult", "train", "seed_everything", "Evaluator", "Trainer"]

#: evaluator(model, data, step) -> metrics, called wherever validation runs.
Evaluator = Callable[[nn.Module, TrainData, int], Mapping[str, float]]


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
        trainer = Trainer(config, evaluator)
        return trainer.fit(stop_after_step)
    finally:
        torch.set_num_threads(threads)


class Trainer:
    """One run, in the parts a reader looks for: `setup_run` (in __init__), `train_step`,
    `validate`, `checkpoint`, `fit` (the loop: steps, flushes, checkpoints, validation)
    and `result` (the summary)."""

    def __init__(self, config: TrainConfig, evaluator: Evaluator | None = None) -> None:
        self.started = time.perf_counter()
        self.config = config
        self.evaluator = evaluator
        self.setup: RunSetup = setup_run(config)
        s = self.setup
        if evaluator is not None and is_sharded(s.trained):
            raise TokredError(
                "run.distributed=fsdp: an evaluator gets the whole model, but each rank holds "
                "a shard of it; evaluate the final checkpoint with `tokred eval` instead"
            )
        self.logger = MetricsLogger(
            s.run_dir,
            enabled=s.dist.is_main,
            tensorboard=config.run.tensorboard,
            progress=config.run.progress,
            total_steps=config.optim.max_steps,
            initial_step=s.start_step,
        )
        self.clip = config.optim.clip_norm if config.optim.clip_norm else math.inf
        self.eval_batch_size = config.eval.batch_size or config.optim.batch_size
        self.window = MetricsWindow(s.dist)
        self.last_checkpoint: Path | None = None
        self._stand_in: tuple[dict[str, Any], BatchTargets] | None = None
        self.planner, self.surgery, self.gate = strategy_parts(config, s)
        self.provenance = checkpoint_provenance(config_to_dict(config))
        self.guard = NonFiniteGuard(
            config.run.on_nonfinite, s.optimizer, self.newest_checkpoint, self.flush
        )
        # run.conflict_every's fixed probe, built on every rank so that a run without samples
        # of both tasks fails alike everywhere (only the main process measures).
        self.conflict: ConflictProbe | None = None
        if config.run.conflict_every:
            self.conflict = ConflictProbe(
                s.step_module,
                s.data,
                config.run.conflict_samples,
                config.optim.batch_size,
                config.run.seed,
                s.device,
                s.autocast,
            )

    # ---- the step -------------------------------------------------------------------------
    def train_step(self, step: int, micros: list[MicroBatch]) -> StepRecord:
        """optim.grad_accum micro-batches -> one optimizer step; the loss is the mean over
        every target token of the step, so micro-batches weigh by their targets. A step
        whose micro-batches hold no sample of a trained task still steps the optimizer and
        the schedule, on no gradient, so every run of a study takes the same steps."""
        s = self.setup
        self._log_samples(step, micros)
        # Under torchrun every rank runs all optim.grad_accum forwards and backwards (FSDP2
        # gathers each layer per forward, DDP reduces in the last backward): a micro-batch
        # with no sample of a trained task runs a stand-in sample at weight 0 (and under
        # gradient surgery so does a task's empty sub-batch: DDP syncs buffers per forward).
        runs = [
            (m[0], m[1], 1.0) if m is not None else (*self.stand_in(), 0.0)
            for m in micros
            if m is not None or s.dist.distributed
        ]
        # The mean over every target of the global step: each rank's sum over all ranks'
        # targets, times world_size because DDP and FSDP2 average the ranks' gradients.
        kept = [(b, t) for b, t, weight in runs if weight]
        total = global_sum(sum(sum(t.counts) for _, t in kept), s.dist, s.device)
        scale = s.dist.world_size / (
            total.clamp_min(1) if torch.is_tensor(total) else max(total, 1)
        )
        sums, tokens, samples = backward_micro_batches(
            s.trained,
            runs,
            scale,
            s.device,
            s.autocast,
            s.dist.distributed,
            self.surgery,
        )
        micros = kept
        grad_norm = full_value(torch.nn.utils.clip_grad_norm_(s.params, self.clip))
        lr = s.scheduler.get_last_lr()[0]
        if self.guard.allows(step, grad_norm):
            s.optimizer.step()
        s.scheduler.step()
        s.optimizer.zero_grad(set_to_none=True)
        counts = (sum(t.counts[0] for _, t in micros), sum(t.counts[1] for _, t in micros))
        return StepRecord(step, sums, counts, grad_norm.detach(), lr, tokens, samples)

    def stand_in(self) -> tuple[dict[str, Any], BatchTargets]:
        """The first training sample of the first trained task, collated once: what a rank
        runs, at weight 0, for a micro-batch that holds no sample of a trained task."""
        if self._stand_in is None:
            data = self.setup.data
            batch = data.collate({self.config.data.train_tasks[0]: [0]})
            self._stand_in = (batch, batch_targets(batch, data.loss_path))
        return self._stand_in

    # ---- logging, validation, checkpoints -------------------------------------------------
    def _log_samples(self, step: int, micros: list[MicroBatch]) -> None:
        if self.config.run.log_samples:
            rows = [
                {"step": step, "micro": i, **(m[2] if m is not None else {})}
                for i, m in enumerate(micros)
            ]
            self.logger.log_rows(SAMPLES_FILE, rows)

    def flush(self) -> None:
        rows = self.window.flush()
        if rows:
            self.logger.log_steps(rows)

    def validate(self, step: int) -> dict[str, float]:
        s = self.setup
        with self.window.paused():
            rng = capture_rng_state()  # an evaluator that samples must not shift the training RNG
            try:
                metrics = validation_loss(
                    s.step_module,
                    s.data,
                    self.config.eval.max_samples,
                    self.eval_batch_size,
                    s.device,
                    s.autocast,
                )
                if self.evaluator is not None:
                    metrics.update(self.evaluator(s.model, s.data, step))
            finally:
                restore_rng_state(rng)
                if is_sharded(s.trained):
                    reshard(s.trained)
            self.logger.log_validation(step, metrics)
        return metrics

    def measure_conflict(self, step: int) -> None:
        """The tasks' gradient conflict on the fixed probe (run/conflict.py) into
        conflict.jsonl. Between optimizer steps, so training is unchanged: every .grad is None
        here (train_step ended in zero_grad) and is left so, the RNG state is restored
        (dropout, or anything else in the forward, may draw from it), and the time is not
        step time. It runs in train mode like the steps (the tiny model has no dropout; a
        model with dropout measures with it on). Under DDP only the main process measures,
        on the unwrapped step module, so no collective runs: the other ranks wait at their
        next all-reduce (a measurement must stay well under the process group's timeout)."""
        if self.conflict is None or not self.setup.dist.is_main:
            return
        with self.window.paused():
            rng = capture_rng_state()
            try:
                rows = self.conflict.measure(step)
            finally:
                restore_rng_state(rng)
            self.logger.log_rows(CONFLICT_FILE, rows)
            if self.gate is not None and self.gate.update(rows):
                self.logger.log_rows(GATE_FILE, [self.gate.row(step)])

    def _share_gate(self) -> None:
        """Every rank runs the gate the main process set from its measurement."""
        if self.gate is None or self.planner is None:
            return
        if self.setup.dist.distributed:
            state = [self.gate.full_layers]
            torch.distributed.broadcast_object_list(state, src=0)
            self.gate.full_layers = tuple(state[0])
        self.planner.full_layers = self.gate.full_layers

    def checkpoint(self, step: int) -> Path | None:
        s = self.setup
        with self.window.paused():
            path = None
            common = {
                "extra": {"data": data_position(step, self.config, s.dist)},
                "keep": self.config.run.keep_checkpoints,
                "provenance": self.provenance,
            }
            if is_sharded(s.trained):  # every rank writes its shards
                export = step == self.config.optim.max_steps
                path = save_sharded_checkpoint(
                    s.run_dir, step, s.step_module, s.optimizer, s.scheduler, s.dist,
                    export=export, **common,
                )  # fmt: skip
            elif s.dist.is_main:
                path = save_checkpoint(s.run_dir, step, s.model, s.optimizer, s.scheduler, **common)
            barrier(s.dist)
        # Every rank knows where the main process wrote it (an interrupt message names it).
        self.last_checkpoint = path or s.run_dir / CHECKPOINT_DIR / checkpoint_name(step)
        return path

    # ---- the loop -------------------------------------------------------------------------
    def _due(self, step: int, every: int | None) -> bool:
        return bool(every) and step % every == 0

    def _after_step(self, step: int, stop_now: bool) -> None:
        """What is due after `step`: a flush, a checkpoint, a conflict measurement, a
        validation."""
        cfg, start = self.config, self.setup.start_step
        if (
            stop_now
            or self._due(step, cfg.run.log_every)
            or step in (start + 1, cfg.optim.max_steps)
        ):
            self.flush()
        if self._due(step, cfg.run.ckpt_every):
            self.checkpoint(step)
        if self._due(step, cfg.run.conflict_every):
            self.measure_conflict(step)
            self._share_gate()
        if self._due(step, cfg.eval.every) and step != cfg.optim.max_steps:
            self.validate(step)

    def fit(self, stop_after_step: int | None = None) -> RunResult:
        s, cfg = self.setup, self.config
        # stop_after_step <= the starting step: build (and resume) everything, run no step.
        stopped = stop_after_step is not None and stop_after_step <= s.start_step
        last_step = cfg.optim.max_steps if not stopped else s.start_step
        val_metrics: dict[str, float] = {}
        depth = cfg.run.prefetch
        if depth is None:
            depth = 2 if s.device.type == "cuda" else 0
        tasks, accum = cfg.data.train_tasks, cfg.optim.grad_accum
        split = self.surgery is not None
        prefetch = Prefetcher(
            lambda m: micro_batch(s.data, s.sampler, m, tasks, self.planner, split), depth
        )
        if self.gate is not None and s.start_step == 0:
            self.logger.log_rows(GATE_FILE, [self.gate.row(0)])
        step = s.start_step
        # SIGINT/SIGTERM during the loop: finish the step and what is due after it, save,
        # stop (run/interrupt.py).
        watch = InterruptWatch(lambda: resume_hint(self.newest_checkpoint(), s.run_dir))
        try:
            s.model.train()
            with watch:
                for step in range(s.start_step + 1, last_step + 1):
                    drawn = [(m, prefetch.get(m)) for m in range((step - 1) * accum, step * accum)]
                    if self.gate is not None and self.planner is not None:
                        self.planner.refresh([(mb[0], m) for m, got in drawn for mb in got if mb])
                    micros = [mb for _, got in drawn for mb in got]
                    self.window.add(self.train_step(step, micros))
                    stop_now = stop_after_step is not None and step >= stop_after_step
                    self._after_step(step, stop_now)
                    signum = watch.requested(s.dist, s.device)
                    if signum is not None:
                        self.stop_on_signal(step, signum)
                    if stop_now:
                        stopped = True
                        break
                self.flush()
                last_step = step
                if not stopped:
                    due = cfg.run.save_final and last_step > s.start_step
                    if due and not self._due(last_step, cfg.run.ckpt_every):
                        self.checkpoint(last_step)
                    if cfg.eval.at_end:
                        val_metrics = self.validate(last_step)
        except OSError as exc:  # a full disk, a quota, a lost mount, while logging
            raise self.write_failed(exc, step) from None
        finally:
            prefetch.close()
            self.logger.close()
        return self.result(last_step, stopped, val_metrics)

    def newest_checkpoint(self) -> Path | None:
        """The newest complete checkpoint of the run: this process's, or the resumed one."""
        return self.last_checkpoint or self.setup.resumed_from

    def write_failed(self, exc: OSError, step: int) -> TokredError:
        """One line for a write the OS refused during the run (checkpoints say it
        themselves): what, why, and where the run can resume from."""
        what = exc.filename or "a run file"
        return TokredError(
            f"cannot write {what} at step {step}: {exc.strerror or exc}; "
            + resume_hint(self.newest_checkpoint(), self.setup.run_dir)
        )

    def stop_on_signal(self, step: int, signum: int) -> None:
        """After the step a signal interrupted: flush, checkpoint (unless
        run.checkpoint_on_interrupt is off or this step has one), then raise RunInterrupted
        saying how to resume. A second signal meanwhile stops at once (InterruptWatch)."""
        self.flush()
        on = self.config.run.checkpoint_on_interrupt
        if on and not self._due(step, self.config.run.ckpt_every):
            self.checkpoint(step)
        saved = "" if on else " (run.checkpoint_on_interrupt=false)"
        raise RunInterrupted(
            f"interrupted by {signal.Signals(signum).name} after step {step} of "
            f"{self.config.optim.max_steps}{saved}; "
            + resume_hint(self.newest_checkpoint(), self.setup.run_dir),
            signum,
        )

    # ---- the result -----------------------------------------------------------------------
    def result(self, last_step: int, stopped: bool, val_metrics: dict[str, float]) -> RunResult:
        s, history = self.setup, self.window.history
        final: dict[str, Any] = {}
        if history:
            final.update(
                {k: history[-1][k] for k in ("loss", "loss_understanding", "loss_generation")}
            )
        final.update(val_metrics)
        result = RunResult(
            run_dir=s.run_dir,
            config=self.config,
            metrics=final,
            history=history,
            run=s.run,
            start_step=s.start_step,
            last_step=last_step,
            stopped_early=stopped,
            checkpoint=self.last_checkpoint,
        )
        if not stopped:
            result.summary = run_summary(
                result,
                s.device,
                s.bf16,
                s.dist,
                self.window.step_time_total,
                time.perf_counter() - self.started,
                self.window.first_step_time,
                {"every": self.config.run.conflict_every}
                | (self.conflict.cost() if self.conflict is not None else {}),
            )
            # Updates dropped by run.on_nonfinite=skip_step (in this process, if resumed).
            result.summary["nonfinite_steps_skipped"] = self.guard.skipped
            self.logger.enabled = s.dist.is_main
            self.logger.write_json(SUMMARY_FILE, result.summary)
        return result
