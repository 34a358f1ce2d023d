"""What a training run returns: its folder, config, metrics, history and built parts.

Its own module because the loop writes it and the summary, the evaluation and the study
read it; none of those should need the loop to name it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokred_models import ReductionHandle
from torch import nn

from ..built_run import BuiltRun
from ..config import TrainConfig
from ..data.protocols import ImageTokenizer, TokenVocab
from ..data.training_data import TrainData
from ..model.builder import BuiltModel

__all__ = ["RunResult"]


@dataclass
class RunResult:
    run_dir: Path
    config: TrainConfig
    metrics: dict[str, Any]
    """Final metrics: the last step's losses and the final validation losses."""
    history: list[dict[str, Any]]
    """One row per optimizer step run by this call (the rows of metrics.jsonl)."""
    run: BuiltRun
    """The model, data and reduction the run trained."""
    summary: dict[str, Any] = field(default_factory=dict)
    start_step: int = 0
    """The step the run started from (the resumed checkpoint's step, else 0)."""
    last_step: int = 0
    stopped_early: bool = False
    """True when stop_after_step ended the run (no final checkpoint, no summary)."""
    checkpoint: Path | None = None
    """The newest checkpoint written by this call."""

    @property
    def model(self) -> nn.Module:
        return self.run.model

    @property
    def handle(self) -> ReductionHandle:
        return self.run.handle

    @property
    def built(self) -> BuiltModel:
        return self.run.built

    @property
    def data(self) -> TrainData:
        return self.run.data

    @property
    def vocab(self) -> TokenVocab:
        return self.run.vocab

    @property
    def vq(self) -> ImageTokenizer:
        return self.run.image_tokenizer
