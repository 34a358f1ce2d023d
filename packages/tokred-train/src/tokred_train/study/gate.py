"""The layers a gating run (strategy.gate_threshold) ran unreduced, step by step, read back
from its gate.jsonl to price it after the run.

gate.jsonl, written by the trainer: one row at step 0 and one at each change,

    {"step": s, "full_layers": [layer indices]}

the layers of a row run without reduction, for every sample, from step s + 1 on until the
next row. A resumed run trains again from its checkpoint and writes the rows of the steps
it repeats once more: a row at or before an earlier row's step starts the history over
from there (the later rows of the interrupted attempt were never kept by the model).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tokred_core import TokredError

from ..run.gate import GATE_FILE
from ..run.log import read_jsonl

__all__ = ["GATE_FILE", "GateTimeline", "read_gate"]


@dataclass(frozen=True)
class GateTimeline:
    """(step, full layers) changes in step order: what `full_layers_at` looks up."""

    steps: tuple[int, ...] = ()
    layers: tuple[frozenset[int], ...] = ()

    def full_layers_at(self, step: int) -> frozenset[int]:
        """The layers run full in optimizer step `step` (1-based): those of the last row
        written before it; none before the first row."""
        i = bisect.bisect_left(self.steps, step) - 1
        return self.layers[i] if i >= 0 else frozenset()

    @classmethod
    def from_rows(cls, rows: Sequence[dict], num_layers: int, where: str = GATE_FILE):
        kept: list[tuple[int, frozenset[int]]] = []
        for row in rows:
            try:
                step, layers = int(row["step"]), frozenset(int(x) for x in row["full_layers"])
            except (KeyError, TypeError, ValueError):
                raise TokredError(f"{where}: row {row!r} lacks a step and full_layers") from None
            if bad := sorted(x for x in layers if not 0 <= x < num_layers):
                raise TokredError(f"{where}: layers {bad} outside the model's {num_layers}")
            while kept and kept[-1][0] >= step:  # a resume wrote this stretch again
                kept.pop()
            kept.append((step, layers))
        return cls(tuple(s for s, _ in kept), tuple(x for _, x in kept))


def read_gate(run_dir: str | Path, num_layers: int) -> GateTimeline:
    """The gate timeline of a gating run; a gating run without the file is refused (its
    cost would silently be priced as if it never gated)."""
    path = Path(run_dir) / GATE_FILE
    if not path.is_file():
        raise TokredError(f"{path} is missing: a gating run (strategy.gate_threshold) writes it")
    return GateTimeline.from_rows(read_jsonl(path), num_layers, str(path))
