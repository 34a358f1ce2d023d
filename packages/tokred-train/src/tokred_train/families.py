"""Hugging Face model families: what a `model.kind: hf` run needs besides the weights.

A real unified model reads images as *its own* VQ codes and text as *its own* token ids, so
training it needs the family's image tokenizer and a `TokenVocab` mapping text, the
begin/end-of-image markers and the codes onto its vocabulary. Those wrappers are written
per family (outside this module) and registered here:

    def emu3_io(model_dir, data_cfg, model):
        vq = image_tokenizer_for(model)  # tokred_train.data.hf_vq
        return Emu3Vocab(model_dir, vq), vq

    register_model_io("emu3", emu3_io)

The factory gets the loaded model when the caller has one (the training loop builds the
model first for kind hf), else None (it may then load what it needs from model_dir).

Some families also need their own loss path: Janus predicts image codes through a separate
`generation_head`, so its batches go through `tokred_models.janus_generation.
janus_unified_forward` rather than the plain causal-LM loss. `check_trainable` reports what
is missing before any weights are loaded.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tokred_core import TokredError
from torch import nn

from .config import DataConfig
from .protocols import ImageTokenizer, TokenVocab

__all__ = [
    "ModelIOFactory",
    "register_model_io",
    "registered_model_io",
    "hf_model_type",
    "check_trainable",
    "build_model_io",
    "SPECIAL_LOSS_PATHS",
]

ModelIOFactory = Callable[[Path, DataConfig, nn.Module | None], tuple[TokenVocab, ImageTokenizer]]
_IO: dict[str, ModelIOFactory] = {}

#: Families whose training loss is not the causal-LM loss over one vocabulary.
SPECIAL_LOSS_PATHS: dict[str, str] = {
    "janus": (
        "tokred_models.janus_generation.janus_unified_forward (understanding images as "
        "SigLIP pixel_values, generation images as Janus VQ codes through generation_head, "
        "with separate text and image labels)"
    ),
}


def register_model_io(model_type: str, factory: ModelIOFactory) -> None:
    """Make `model_type` trainable: factory(model_dir, data_config, model or None) ->
    (vocab, image tokenizer)."""
    _IO[model_type] = factory


def registered_model_io() -> tuple[str, ...]:
    return tuple(sorted(_IO))


def hf_model_type(path: str | Path) -> str:
    """The model_type in a local Hugging Face folder's config.json (clear error if absent)."""
    folder = Path(path).expanduser()
    config = folder / "config.json"
    if not config.is_file():
        raise TokredError(
            f"model.path={str(path)!r}: no Hugging Face model there (config.json not found); "
            "set model.path to a local model folder (nothing is downloaded)"
        )
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TokredError(f"{config} is not valid JSON: {exc}") from None
    model_type = data.get("model_type")
    if not isinstance(model_type, str):
        raise TokredError(f"{config} names no model_type")
    return model_type


def check_trainable(model_type: str) -> None:
    """Raise naming what tokred train lacks for this family (before loading any weights)."""
    if model_type in SPECIAL_LOSS_PATHS:
        raise TokredError(
            f"training a {model_type!r} model needs its own loss path, "
            f"{SPECIAL_LOSS_PATHS[model_type]}, and its image processor and VQ encoder; "
            "tokred train does not wire that path yet. The config, model loading, 4-bit "
            "quantization, reduction patching and LoRA all build (see tokred_train.build_model)"
        )
    if model_type not in _IO:
        known = ", ".join(registered_model_io()) or "none"
        raise TokredError(
            f"no image tokenizer / vocabulary registered for model type {model_type!r} "
            f"(registered: {known}): a real model must read images as its own VQ codes. "
            "Register one with tokred_train.families.register_model_io, or train model.kind=tiny"
        )


def build_model_io(
    model_dir: str | Path, data: DataConfig, model: nn.Module | None = None
) -> tuple[TokenVocab, ImageTokenizer]:
    model_type = hf_model_type(model_dir)
    check_trainable(model_type)
    return _IO[model_type](Path(model_dir).expanduser(), data, model)
