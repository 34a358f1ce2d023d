"""Where training metrics go: metrics.jsonl, TensorBoard, a tqdm bar; and the run summary.

Only the main process logs (the loop passes enabled=False elsewhere). The loop hands over
rows in batches at every flush (every run.log_every steps), so a flush costs one device
synchronisation, not one per metric.

metrics.jsonl: one JSON object per optimizer step:
    step, loss, loss_understanding, loss_generation (null when the step had no sample of
    that task; "nan" or "inf" when not finite), lr, grad_norm, tokens (non-padding tokens in the step), samples,
    tokens_per_s, samples_per_s, step_time_s (averaged over the flush window), elapsed_s
validation.jsonl: step plus val_* losses, whenever validation runs.
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_write_text

__all__ = ["MetricsLogger", "truncate_jsonl", "peak_memory_bytes", "read_jsonl"]

METRICS_FILE = "metrics.jsonl"
VALIDATION_FILE = "validation.jsonl"
SAMPLES_FILE = "samples.jsonl"


def _clean(value: Any) -> Any:
    """JSON has no NaN or inf: they are written as the strings "nan", "inf" and "-inf", so
    that a non-finite loss stays distinct from null (the step had no sample of the task)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line cut short by a crash ends the readable log
    return rows


def truncate_jsonl(path: str | Path, max_step: int) -> None:
    """Keep the rows with step <= max_step (a resumed run rewrites what came after)."""
    path = Path(path)
    if not path.is_file():
        return
    rows = [r for r in read_jsonl(path) if int(r.get("step", 0)) <= max_step]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def peak_memory_bytes(device: torch.device) -> tuple[int, str]:
    """(bytes, what was measured): CUDA max allocated on a GPU, the process max RSS on CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "cuda_max_memory_allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1 if sys.platform == "darwin" else 1024  # Linux reports KiB
    return int(rss * scale), "process_max_rss"


class MetricsLogger:
    def __init__(
        self,
        run_dir: Path,
        enabled: bool = True,
        tensorboard: bool = True,
        progress: bool = True,
        total_steps: int = 0,
        initial_step: int = 0,
    ) -> None:
        self.enabled = enabled
        self.run_dir = Path(run_dir)
        self._writer = None
        self._bar = None
        self._files: dict[str, Any] = {}
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(
                log_dir=str(self.run_dir / "tensorboard"), purge_step=initial_step + 1
            )
        if progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=total_steps,
                initial=initial_step,
                desc="train",
                unit="step",
                dynamic_ncols=True,
            )

    def _append(self, name: str, rows: Iterable[Mapping[str, Any]]) -> None:
        f = self._files.get(name)
        if f is None:
            f = self._files[name] = open(self.run_dir / name, "a", encoding="utf-8")  # noqa: SIM115
        for row in rows:
            f.write(json.dumps({k: _clean(v) for k, v in row.items()}) + "\n")
        f.flush()

    def log_steps(self, rows: list[dict[str, Any]]) -> None:
        if not self.enabled or not rows:
            return
        self._append(METRICS_FILE, rows)
        if self._writer is not None:
            for row in rows:
                for key, value in row.items():
                    if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                        self._writer.add_scalar(f"train/{key}", value, row["step"])
        if self._bar is not None:
            last = rows[-1]
            post = {"loss": f"{last['loss']:.4f}"}
            if last.get("tokens_per_s"):
                post["tok/s"] = f"{last['tokens_per_s']:.0f}"
            # The postfix first: `update` draws the bar, and it must draw this flush's loss
            # (set after it, the postfix showed on the next draw: the previous flush's).
            self._bar.set_postfix(post, refresh=False)
            self._bar.update(last["step"] - self._bar.n)

    def log_rows(self, name: str, rows: list[dict[str, Any]]) -> None:
        """Rows of another JSONL file of the run (e.g. samples.jsonl)."""
        if self.enabled and rows:
            self._append(name, rows)

    def log_validation(self, step: int, metrics: Mapping[str, float]) -> None:
        if not self.enabled or not metrics:
            return
        self._append(VALIDATION_FILE, [{"step": step, **metrics}])
        if self._writer is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self._writer.add_scalar(f"val/{key}", value, step)

    def write_json(self, name: str, data: Mapping[str, Any]) -> None:
        if self.enabled:
            atomic_write_text(self.run_dir / name, json.dumps(data, indent=2, default=str) + "\n")

    def close(self) -> None:
        for f in self._files.values():
            f.flush()
            os.fsync(f.fileno())
            f.close()
        self._files.clear()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._bar is not None:
            self._bar.close()
            self._bar = None
