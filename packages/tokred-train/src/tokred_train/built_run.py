"""One way to build what a run needs: its data, its model and the reduction patched into it.

    run = build_run(config, device)                 # training: fit the embedded VQ/vocab
    run = build_run(config, device, saved=run_dir)  # eval / analysis: load them back

Why one function: the order is not free. The tiny model is sized by its vocabulary, which
the embedded data builds, so its data comes first; a Hugging Face model brings its own
vocabulary and image tokenizer (its VQ model lives in its weights), so its model comes
first. Training, `tokred eval` and `tokred analyze` all build through here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from tokred_core import TokredError
from tokred_models import ReductionHandle
from torch import nn

from .config import TrainConfig
from .data import PatchVQTokenizer, UnifiedVocab
from .data.model_io import ModelIO
from .data.pipeline import build_embedded_data
from .data.protocols import ImageTokenizer, TokenVocab
from .data.training_data import TrainData
from .families import build_model_io
from .model.builder import BuiltModel, build_model, count_parameters

__all__ = ["BuiltRun", "build_run", "build_train_data", "saved_embedded_io"]

VOCAB_FILE = "vocab.json"
VQ_DIR = "vq"


@dataclass
class BuiltRun:
    """The model, data and reduction of one run, built in the order its kind needs."""

    config: TrainConfig
    built: BuiltModel
    """The model as built: the trained module, the patched base, the reduction handle."""
    data: TrainData
    """Both tasks' training and validation samples, with the vocabulary and image tokenizer."""

    @property
    def model(self) -> nn.Module:
        return self.built.model

    @property
    def handle(self) -> ReductionHandle:
        return self.built.handle

    @property
    def vocab(self) -> TokenVocab:
        return self.data.vocab

    @property
    def image_tokenizer(self) -> ImageTokenizer:
        return self.data.image_tokenizer


def saved_embedded_io(run_dir: str | Path) -> ModelIO:
    """The vocabulary and patch VQ tokenizer a tiny run saved beside its checkpoints."""
    run_dir = Path(run_dir)
    return ModelIO(UnifiedVocab.load(run_dir / VOCAB_FILE), PatchVQTokenizer.load(run_dir / VQ_DIR))


def build_train_data(config: TrainConfig, model: nn.Module | None = None) -> TrainData:
    """The data of a run: the embedded pipeline for the tiny model, the model's own
    vocabulary and image tokenizer for a Hugging Face model (`model`: the loaded model,
    handed to the family's factory in tokred_train.families)."""
    if config.model.kind == "hf":
        return build_embedded_data(
            config.data, build_model_io(config.model.path, config.data, model)
        )
    return build_embedded_data(config.data)


def build_run(
    config: TrainConfig, device: str | torch.device, saved: str | Path | None = None
) -> BuiltRun:
    """Data and model of `config` on `device`. `saved`: a run folder whose vocabulary and
    VQ tokenizer a tiny model loads back instead of fitting them anew (a Hugging Face
    model always brings its own)."""
    if config.model.kind == "tiny":  # the vocabulary (from the data) sizes the model
        io = saved_embedded_io(saved) if saved is not None else None
        data = build_embedded_data(config.data, io)
        _check_positions(config, None, data)  # known from the config: before the model
        built = build_model(config, data.vocab.vocab_size, device)
    else:  # the model brings its vocabulary and image tokenizer
        built = build_model(config, None, device)
        data = build_train_data(config, built.base)
        _freeze_image_tokenizer(built, data)
        _check_positions(config, built.base, data)
    rows = built.base.get_input_embeddings().num_embeddings
    if data.vocab.vocab_size > rows:
        raise TokredError(
            f"the vocabulary has {data.vocab.vocab_size} ids but the model embeds only {rows}"
        )
    return BuiltRun(config, built, data)


def _freeze_image_tokenizer(built: BuiltModel, data: TrainData) -> None:
    """Freeze the family's VQ model inside the Hugging Face model (Janus, Emu3, Chameleon):
    it turns images into codes before a batch exists, under no_grad, so no loss reaches
    it. Left trainable it would only hold optimizer memory and, never getting a gradient,
    stall DistributedDataParallel's buckets and FSDP2's reduce-scatters."""
    vq = getattr(data.image_tokenizer, "vqmodel", None)
    if isinstance(vq, nn.Module) and any(p.requires_grad for p in vq.parameters()):
        vq.requires_grad_(False)
        built.trainable_parameters = count_parameters(built.model)[0]


def _position_limit(config: TrainConfig, base: nn.Module | None) -> tuple[int, str, str] | None:
    """(the longest sequence the model takes, what sets it, how to lift it), or None when
    its config states no limit: model.max_positions for the tiny model, the text model's
    max_position_embeddings for a Hugging Face one."""
    if config.model.kind == "tiny":
        n = config.model.max_positions
        return n, f"model.max_positions={n}", "raise model.max_positions or shorten its text"
    hf = getattr(base, "config", None)
    text = hf.get_text_config() if hasattr(hf, "get_text_config") else hf
    n = getattr(text, "max_position_embeddings", None)
    if not isinstance(n, int) or n <= 0:
        return None
    where = f"max_position_embeddings={n} of {config.model.path}"
    return n, where, "shorten its text"


def _check_positions(config: TrainConfig, base: nn.Module | None, data: TrainData) -> None:
    """No sample may be longer than the model's positions (a longer one would train on
    positions the model was never built for); data.max_length, when it is no longer, has
    already been checked by the data pipeline."""
    limit = _position_limit(config, base)
    if limit is None or (data.max_length is not None and data.max_length <= limit[0]):
        return
    data.check_lengths(*limit)
