"""What the training loop needs from an image tokenizer and a vocabulary.

The embedded default satisfies both with `PatchVQTokenizer` and `UnifiedVocab`. A real
model family plugs in its own pair (its VQ encoder, its tokenizer's ids for text, the
begin/end-of-image markers and the image codes) by registering a factory in
`tokred_train.families`; the loop, the sampler and `collate` only use the members below.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import torch

__all__ = ["ImageTokenizer", "TokenVocab"]


@runtime_checkable
class ImageTokenizer(Protocol):
    """Images -> discrete codes, once per image before training starts."""

    @property
    def codebook_size(self) -> int:
        """Number of distinct codes (code ids are 0..codebook_size-1)."""
        ...

    @property
    def num_tokens_per_image(self) -> int:
        """Codes per image (every image gives the same number)."""
        ...

    def encode(self, images: Any) -> torch.Tensor:
        """A batch of images (uint8 (B, H, W, 3) or a list of PIL images) -> (B, T) long codes."""
        ...


@runtime_checkable
class TokenVocab(Protocol):
    """The token ids `tokred_train.data.collate` builds sequences from."""

    pad_id: int
    bos_id: int
    eos_id: int
    boi_id: int
    eoi_id: int

    @property
    def vocab_size(self) -> int:
        """Rows the model's embedding and output head need."""
        ...

    def encode_text(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """Text -> token ids."""
        ...

    def image_ids(self, codes: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """Image codes -> token ids (of a generated image; also of an understood one unless
        the vocabulary defines `input_image_ids`, see tokred_train.data.collate)."""
        ...
