"""Stopping a run on SIGINT or SIGTERM without losing its work.

Why: Ctrl-C used to end a run with nothing said and nothing saved, and SIGTERM (what a
cluster scheduler sends before it kills a job) ended it at once, leaving a half-written
checkpoint folder behind until the next start. While a run trains, `InterruptWatch` turns
the first signal into a request: the loop finishes the step it is in, writes a checkpoint
(run.checkpoint_on_interrupt), says where and how to resume, and raises `RunInterrupted`,
which the CLI ends with 130 (SIGINT) or 143 (SIGTERM). A second signal raises at once,
wherever the run is: a checkpoint write it cuts short removes its own temporary folder,
so the newest complete checkpoint stays the one a resume reads.

Under torchrun every rank decides together: each step ends with a max-reduce of the
ranks' requests, so a signal that reached one rank stops all of them after the same step
(the checkpoint is a collective).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from tokred_core import RunInterrupted

from .distributed import DistInfo

__all__ = ["InterruptWatch", "SIGNALS", "resume_hint"]

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def resume_hint(checkpoint: Path | None, run_dir: Path) -> str:
    """The part of an interrupt message that says what a resume starts from."""
    if checkpoint is None:
        return f"no checkpoint in {run_dir} yet: a rerun starts from step 0"
    return f"resume from {checkpoint} with run.resume=true and run.out_dir={run_dir}"


class InterruptWatch:
    """While entered (in the main thread: signals reach only it), SIGINT and SIGTERM set
    `signum` instead of stopping; `requested(dist, device)` is the signal every rank agrees
    on at the end of a step (None: go on). `on_second` gives the message of a second
    signal, which raises RunInterrupted at once. Earlier handlers come back on exit."""

    def __init__(self, on_second: Callable[[], str]) -> None:
        self.signum: int | None = None
        self.on_second = on_second
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> InterruptWatch:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        self._restore()

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.signum is None:
            self.signum = signum
            log.warning(
                "%s: finishing this step, then saving a checkpoint and stopping (send it "
                "again to stop at once)",
                name,
            )
            return
        self._restore()
        raise RunInterrupted(f"stopped at once by a second {name}; {self.on_second()}", signum)

    def requested(self, dist: DistInfo, device: torch.device) -> int | None:
        """The signal to stop on after this step, agreed by every rank."""
        if not dist.distributed:
            return self.signum
        flag = torch.tensor([self.signum or 0], dtype=torch.int64, device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return int(flag.item()) or None
