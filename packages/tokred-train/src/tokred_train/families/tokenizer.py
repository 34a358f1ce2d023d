"""A real model's own tokenizer as the `TokenVocab` collation builds sequences from.

Why: a pretrained unified model only understands the ids it was trained on, so text goes
through its Hugging Face tokenizer (loaded from the local model folder, never downloaded)
and images through its own markers and image ids:

- the begin/end-of-image markers come from the tokenizer's `boi_token` / `eoi_token`
  (transformers' converted Janus, Emu3 and Chameleon tokenizers name them), else from the
  family's defaults given by the caller;
- `image_ids(codes)` turns the family's VQ codes into the ids a *generated* image is
  written with (Emu3/Chameleon: visual tokens of the LM vocabulary; Janus: the codes
  themselves, read by `generation_embeddings` and predicted by `generation_head`);
- `input_image_ids(codes)` gives the ids an *understood* image is read as: the same for
  Emu3 and Chameleon, `image_token` placeholders for Janus, whose understanding images go
  through its SigLIP encoder (the pixels come with the batch, see training_data.py).
- `code_token_ids()` and `image_token_template()` tell evaluation how to write an image
  token by token: which ids a code may take, and which ids of the block are fixed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from tokred_core import TokredError

__all__ = ["HFTokenizerVocab", "load_local_tokenizer", "token_id"]

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")

ImageIds = Callable[[torch.Tensor], torch.Tensor]


def load_local_tokenizer(model_dir: str | Path) -> Any:
    """The tokenizer saved in a local model folder (a clear error when there is none)."""
    from transformers import AutoTokenizer

    folder = Path(model_dir).expanduser()
    # transformers builds an empty tokenizer when the files are missing: check first.
    if not any((folder / name).is_file() for name in _TOKENIZER_FILES):
        raise TokredError(
            f"model.path={str(model_dir)!r}: no usable tokenizer there (none of "
            f"{', '.join(_TOKENIZER_FILES)}); the folder must hold the model's tokenizer files"
        )
    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TokredError(
            f"model.path={str(model_dir)!r}: no usable tokenizer there "
            f"({' '.join(str(exc).split())[:200]}); the folder must hold the model's tokenizer files"
        ) from None


class HFTokenizerVocab:
    """Text through a Hugging Face tokenizer; image ids through the family's functions."""

    def __init__(
        self,
        tokenizer: Any,
        image_ids: ImageIds,
        *,
        input_image_ids: ImageIds | None = None,
        boi_token: str | None = None,
        eoi_token: str | None = None,
        vocab_size: int | None = None,
        name: str = "model",
        code_ids: torch.Tensor | None = None,
        image_template: Sequence[int | None] | None = None,
    ):
        self.tokenizer = tokenizer
        self.name = name
        self._image_ids = image_ids
        self._input_image_ids = input_image_ids or image_ids
        self.boi_id = self._special_id(getattr(tokenizer, "boi_token", None) or boi_token, "boi")
        self.eoi_id = self._special_id(getattr(tokenizer, "eoi_token", None) or eoi_token, "eoi")
        self.bos_id = self._required(tokenizer.bos_token_id, "bos_token")
        self.eos_id = self._required(tokenizer.eos_token_id, "eos_token")
        pad = tokenizer.pad_token_id
        # Padding never reaches the loss or attention, so any id works when none is named.
        self.pad_id = int(pad) if pad is not None else self.eos_id
        self._vocab_size = int(vocab_size) if vocab_size is not None else len(tokenizer)
        self._code_ids = None if code_ids is None else torch.as_tensor(code_ids).long()
        self._template = None if image_template is None else list(image_template)

    def _required(self, value: int | None, what: str) -> int:
        if value is None:
            raise TokredError(f"the {self.name} tokenizer defines no {what}")
        return int(value)

    def _special_id(self, token: str | None, what: str) -> int:
        if token is None:
            raise TokredError(f"the {self.name} tokenizer names no {what} token")
        ids = self.tokenizer.convert_tokens_to_ids([token])
        unk = self.tokenizer.unk_token_id
        if not ids or ids[0] is None or (unk is not None and ids[0] == unk):
            raise TokredError(f"the {self.name} tokenizer has no {what} token {token!r}")
        return int(ids[0])

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    def encode_text(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return [self.bos_id] * add_bos + ids + [self.eos_id] * add_eos

    def decode_text(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def image_ids(self, codes: torch.Tensor | Sequence[int]) -> torch.Tensor:
        return self._image_ids(torch.as_tensor(codes, dtype=torch.long).reshape(-1))

    def input_image_ids(self, codes: torch.Tensor | Sequence[int]) -> torch.Tensor:
        return self._input_image_ids(torch.as_tensor(codes, dtype=torch.long).reshape(-1))

    def code_token_ids(self) -> torch.Tensor:
        """(codebook_size,) the id each code is written as (a generated image's slots)."""
        if self._code_ids is None:
            raise TokredError(f"the {self.name} vocabulary was built without its code ids")
        return self._code_ids

    def image_token_template(self) -> list[int | None]:
        """A generated image's block, one entry per id of `image_ids(codes)`: the fixed id
        (a size prefix, a row end) or None where a code goes."""
        if self._template is None:
            raise TokredError(f"the {self.name} vocabulary was built without its image template")
        return list(self._template)

    def __repr__(self) -> str:
        return f"HFTokenizerVocab({self.name}, vocab_size={self.vocab_size})"


def token_id(tokenizer: Any, token: str, family: str) -> int:
    """The id of one special token of a family's tokenizer (clear error if it lacks it)."""
    ids = tokenizer.convert_tokens_to_ids([token])
    if not ids or ids[0] is None or ids[0] == tokenizer.unk_token_id:
        raise TokredError(f"the {family} tokenizer has no {token!r} token")
    return int(ids[0])
