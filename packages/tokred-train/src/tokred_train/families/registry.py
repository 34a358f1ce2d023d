"""The registry of model families: which `ModelIO` factory serves a `model_type`.

A family is what a `model.kind: hf` run needs besides the weights.

A real unified model reads images as *its own* VQ codes (or pixels, for an encoder of its
own) and text as *its own* token ids, so training it needs the family's image tokenizer
and a `TokenVocab` mapping text, the begin/end-of-image markers and the codes onto its
vocabulary. A factory per family builds them (as a `ModelIO`) and is registered here:

    def my_io(model_dir, data_cfg, model):
        vq = image_tokenizer_for(model)  # tokred_train.families.image_tokenizers
        return ModelIO(MyVocab(model_dir, vq), vq)

    register_model_io("my_type", my_io)

Janus, Emu3 and Chameleon register themselves in their own modules of this package,
which `tokred_train.families` imports; this registry imports none of them. The
factory gets the loaded model when the caller has one (the training loop builds the model
first for kind hf), else None (it may then load what it needs from model_dir).

Some families read understanding images as pixels through their own vision encoder and
have their own loss path: Janus (SigLIP pixels in, codes predicted by a separate
`generation_head`) runs through `tokred_train.run.step`'s "janus" path.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tokred_core import TokredError
from torch import nn

from ..config import DataConfig
from ..data.model_io import LOSS_PATHS, ModelIO

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

ModelIOFactory = Callable[[Path, DataConfig, nn.Module | None], ModelIO]
_IO: dict[str, ModelIOFactory] = {}


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
