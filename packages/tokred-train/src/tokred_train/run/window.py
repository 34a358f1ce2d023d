"""The window of metrics between two flushes: per-step losses and gradient norms stay on
the device until the flush, which reduces them over ranks and reads them with one host
synchronisation.

Throughput is measured per window, from one flush to the next, minus the time spent in
validation and checkpoints (`paused`), so a run's tokens/s counts optimizer steps only.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from .distributed import DistInfo

__all__ = ["StepRecord", "MetricsWindow"]


@dataclass
class StepRecord:
    """One optimizer step as the step left it: tensors still on the device."""

    step: int
    sums: torch.Tensor
    """(2,) summed loss over the step's understanding and generation targets."""
    counts: tuple[int, int]
    """Target tokens of each task in the step (this rank's)."""
    grad_norm: torch.Tensor
    lr: float
    tokens: int
    samples: int


class MetricsWindow:
    """Steps since the last flush, and the rows of every flushed step of this run."""

    def __init__(self, dist: DistInfo) -> None:
        self.dist = dist
        self.train_start = time.perf_counter()
        self.history: list[dict[str, Any]] = []
        """One row per flushed step (the rows of metrics.jsonl)."""
        self.step_time_total = 0.0
        """Seconds of optimizer steps over all flushed windows."""
        self.first_step_time: float | None = None
        self._pending: list[StepRecord] = []
        self._start = self.train_start
        self._paused = 0.0

    def add(self, record: StepRecord) -> None:
        self._pending.append(record)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Time spent inside does not count as step time (validation, checkpoints)."""
        t = time.perf_counter()
        try:
            yield
        finally:
            self._paused += time.perf_counter() - t

    def _reduced_values(self) -> list[list[float]]:
        """Per pending step: loss sums (2), target counts (2), tokens, samples summed over
        ranks, then this rank's gradient norm (equal on every rank after DDP)."""
        dev = self._pending[0].sums.device
        local = torch.stack(
            [
                torch.cat(
                    [
                        p.sums.double(),
                        torch.tensor(
                            [*p.counts, p.tokens, p.samples], dtype=torch.float64, device=dev
                        ),
                    ]
                )
                for p in self._pending
            ]
        )
        if self.dist.distributed:
            import torch.distributed as tdist

            tdist.all_reduce(local)
        norms = torch.stack([p.grad_norm.reshape(()).double().to(dev) for p in self._pending])
        return torch.cat([local, norms[:, None]], dim=1).tolist()  # the one sync per window

    def flush(self) -> list[dict[str, Any]]:
        """The rows of the pending steps (also appended to `history`); [] when none."""
        if not self._pending:
            return []
        values = self._reduced_values()
        now = time.perf_counter()
        steps = len(self._pending)
        span = max(now - self._start - self._paused, 1e-9)
        self.step_time_total += span
        if self.first_step_time is None:
            self.first_step_time = span / steps
        window_tokens = sum(v[4] for v in values)
        window_samples = sum(v[5] for v in values)
        rows = []
        for p, (su, sg, cu, cg, tokens, samples, gn) in zip(self._pending, values, strict=True):
            cu, cg = int(cu), int(cg)
            rows.append(
                {
                    "step": p.step,
                    "loss": (su + sg) / max(cu + cg, 1),
                    "loss_understanding": su / cu if cu else None,
                    "loss_generation": sg / cg if cg else None,
                    "lr": p.lr,
                    "grad_norm": gn,
                    "tokens": int(tokens),
                    "samples": int(samples),
                    "tokens_per_s": window_tokens / span,
                    "samples_per_s": window_samples / span,
                    "step_time_s": span / steps,
                    "elapsed_s": now - self.train_start,
                }
            )
        self.history.extend(rows)
        self._pending.clear()
        self._start, self._paused = now, 0.0
        return rows
