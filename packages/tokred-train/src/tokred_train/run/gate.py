"""Conflict-aware gating (strategy.gate_threshold): reduce a layer only while the tasks'
gradients agree there.

At every run.conflict_every measurement (conflict.py, on the run's reduction) a layer's
agreement is its adjusted cosine (Uni-X: the tasks' gradient cosine minus that of two
random halves of mixed data) over all its parameters. A reduced layer whose agreement
falls below threshold - hysteresis runs in full from the next step on; a full layer whose
agreement rises above threshold + hysteresis is reduced again. The band keeps a layer
whose agreement hovers at the threshold from flipping at every measurement.

gate.jsonl holds the state: a row {"step": s, "full_layers": [...]} at step 0 and after
each change, meaning the steps from s + 1 on run those layers in full. The study prices
a gated run from it; a resumed run reads its state back from it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .log import read_jsonl

__all__ = ["ConflictGate", "GATE_FILE", "layer_agreement"]

GATE_FILE = "gate.jsonl"


def layer_agreement(rows: Iterable[Mapping[str, Any]]) -> dict[int, float]:
    """Per decoder layer, the adjusted cosine of its "total" row (layers whose cosine is
    undefined, a gradient being zero, are left out: the gate then keeps their state)."""
    agreement = {}
    for row in rows:
        layer, value = row.get("layer"), row.get("adjusted_cosine")
        if row.get("group") == "total" and layer is not None and value is not None:
            agreement[int(layer)] = float(value)
    return agreement


class ConflictGate:
    def __init__(self, threshold: float, hysteresis: float) -> None:
        self.threshold = threshold
        self.hysteresis = hysteresis
        self.full_layers: tuple[int, ...] = ()

    def update(self, rows: Iterable[Mapping[str, Any]]) -> bool:
        """Apply one measurement's conflict.jsonl rows; True when the full layers changed."""
        full = set(self.full_layers)
        for layer, value in layer_agreement(rows).items():
            if layer in full and value > self.threshold + self.hysteresis:
                full.discard(layer)
            elif layer not in full and value < self.threshold - self.hysteresis:
                full.add(layer)
        changed = tuple(sorted(full)) != self.full_layers
        self.full_layers = tuple(sorted(full))
        return changed

    def row(self, step: int) -> dict[str, Any]:
        return {"step": step, "full_layers": list(self.full_layers)}

    def resume(self, run_dir: Path, start_step: int) -> None:
        """The state as it stood after `start_step` (gate.jsonl, already cut to it)."""
        rows = [r for r in read_jsonl(run_dir / GATE_FILE) if int(r["step"]) <= start_step]
        self.full_layers = tuple(sorted(rows[-1]["full_layers"])) if rows else ()
