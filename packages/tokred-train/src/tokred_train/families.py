"""Hugging Face model families: what a `model.kind: hf` run needs besides the weights.

A real unified model reads images as *its own* VQ codes (or pixels, for an encoder of its
own) and text as *its own* token ids, so training it needs the family's image tokenizer
and a `TokenVocab` mapping text, the begin/end-of-image markers and the codes onto its
vocabulary. A factory per family builds them (as a `ModelIO`) and is registered here:

    def my_io(model_dir, data_cfg, model):
        vq = image_tokenizer_for(model)  # tokred_train.data.hf_vq
        return ModelIO(MyVocab(model_dir, vq), vq)

    register_model_io("my_type", my_io)

Janus, Emu3 and Chameleon are registered by `tokred_train.hf_families` on first use. The
factory gets the loaded model when the caller has one (the training loop builds the model
first for kind hf), else None (it may then load what it needs from model_dir).

Some families read understanding images as pixels through their own vision encoder and
have their own loss path: Janus (SigLIP pixels in, codes predicted by a separate
`generation_head`) runs through `tokred_train.train_step`'s "janus" path.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tokred_core import TokredError
from torch import nn

from .config import DataConfig
from .data.hf_vq_base import PixelSpec
from .protocols import ImageTokenizer, TokenVocab

__all__ = [
    "LOSS_PATHS",
    "ModelIO",
    "ModelIOFactory",
    "register_model_io",
    "registered_model_io",
    "hf_model_type",
    "check_trainable",
    "build_model_io",
]

LossPath = Literal["causal_lm", "janus"]
#: The loss paths of `tokred_train.train_step`.
LOSS_PATHS: tuple[str, ...] = ("causal_lm", "janus")


@dataclass(frozen=True)
class ModelIO:
    """What a model family brings to the data side and the loss."""

    vocab: TokenVocab
    image_tokenizer: ImageTokenizer
    """Encodes generation targets (and understanding inputs, unless `understanding_pixels`)."""
    understanding_pixels: PixelSpec | None = None
    """Set when the model reads understanding images as pixels through its own vision
    encoder: each understanding sample keeps its image fitted by this spec, and batches
    carry the normalised `pixel_values`."""
    loss_path: LossPath = "causal_lm"

    def __post_init__(self) -> None:
        if self.loss_path not in LOSS_PATHS:
            raise TokredError(
                f"loss path {self.loss_path!r}: expected one of {', '.join(LOSS_PATHS)}"
            )


ModelIOFactory = Callable[[Path, DataConfig, nn.Module | None], ModelIO]
_IO: dict[str, ModelIOFactory] = {}
_BUILTIN_LOADED = False


def _load_builtin() -> None:
    """Register the families tokred ships (a deferred import: they import this module)."""
    global _BUILTIN_LOADED
    if not _BUILTIN_LOADED:
        _BUILTIN_LOADED = True
        from . import hf_families  # noqa: F401  (registers on import)


def register_model_io(model_type: str, factory: ModelIOFactory) -> None:
    """Make `model_type` trainable: factory(model_dir, data_config, model or None) ->
    (vocab, image tokenizer)."""
    _IO[model_type] = factory


def registered_model_io() -> tuple[str, ...]:
    _load_builtin()
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
    if model_type not in registered_model_io():
        known = ", ".join(registered_model_io()) or "none"
        raise TokredError(
            f"no image tokenizer / vocabulary registered for model type {model_type!r} "
            f"(registered: {known}): a real model must read images as its own VQ codes. "
            "Register one with tokred_train.families.register_model_io, or train model.kind=tiny"
        )


def build_model_io(
    model_dir: str | Path, data: DataConfig, model: nn.Module | None = None
) -> ModelIO:
    model_type = hf_model_type(model_dir)
    check_trainable(model_type)
    io = _IO[model_type](Path(model_dir).expanduser(), data, model)
    if not isinstance(io, ModelIO):
        raise TokredError(
            f"the {model_type!r} factory returned {type(io).__name__}, expected a ModelIO"
        )
    return io
