"""Image tokenizers for real unified models, wrapping each model's own VQ model.

`image_tokenizer_for(model)` picks the tokenizer from `model.config.model_type`:

| model_type                        | class                     | decode | LM vocabulary     |
|-----------------------------------|---------------------------|--------|-------------------|
| chameleon (and chameleon_vqgan)   | ChameleonImageTokenizer   | no     | IMGIMG tokens     |
| emu3 (and emu3_vqgan)             | Emu3ImageTokenizer        | yes    | visual tokens     |
| janus (and janus_vqgan)           | JanusImageTokenizer       | yes    | none (own head)   |

All share `HFImageTokenizer`'s protocol, the same one `PatchVQTokenizer` offers the
embedded tiny model: `encode(images) -> (B, num_tokens_per_image)` codes,
`decode(codes) -> uint8 (B, H, W, 3)`, `num_tokens_per_image`, `codebook_size`; plus
`codes_to_token_ids` / `token_ids_to_codes` where codes live in the LM vocabulary.
See each class's module for its exact pipeline.
"""

from __future__ import annotations

from typing import Any

from tokred_core import TokredError
from torch import nn

from .base import HFImageTokenizer
from .chameleon import ChameleonImageTokenizer
from .emu3 import Emu3ImageTokenizer
from .janus import JanusImageTokenizer

__all__ = [
    "HFImageTokenizer",
    "ChameleonImageTokenizer",
    "Emu3ImageTokenizer",
    "JanusImageTokenizer",
    "IMAGE_TOKENIZERS",
    "image_tokenizer_for",
]

IMAGE_TOKENIZERS: dict[str, type[HFImageTokenizer]] = {
    "chameleon": ChameleonImageTokenizer,
    "chameleon_vqgan": ChameleonImageTokenizer,
    "emu3": Emu3ImageTokenizer,
    "emu3_vqgan": Emu3ImageTokenizer,
    "janus": JanusImageTokenizer,
    "janus_vqgan": JanusImageTokenizer,
}


def image_tokenizer_for(model: nn.Module, **kwargs: Any) -> HFImageTokenizer:
    """The image tokenizer of a loaded Chameleon, Emu3 or Janus model (or its bare VQ model).

    kwargs go to the class's `from_model` (e.g. image_size for Emu3, image_processor).
    """
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    cls = IMAGE_TOKENIZERS.get(model_type) if isinstance(model_type, str) else None
    if cls is None:
        supported = ", ".join(sorted(IMAGE_TOKENIZERS))
        raise TokredError(
            f"no image tokenizer for model_type {model_type!r} ({type(model).__name__}); "
            f"supported: {supported}. The embedded tiny model uses PatchVQTokenizer instead"
        )
    return cls.from_model(model, **kwargs)
