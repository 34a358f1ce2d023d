"""What a model family brings to the data side and the loss: its vocabulary, its image
tokenizer, the pixels of its own vision encoder, and its loss path.

Why here, in data: the pipeline builds a run's samples from these parts whatever family
they come from, so the data side needs the bundle but none of the families;
`tokred_train.families` builds one per Hugging Face model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tokred_core import TokredError

from .pixels import PixelSpec
from .protocols import ImageTokenizer, TokenVocab

__all__ = ["LOSS_PATHS", "LossPath", "ModelIO"]

LossPath = Literal["causal_lm", "janus"]
#: The loss paths of `tokred_train.run.step`.
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
