"""Emu3: its image tokenizer (`Emu3VQVAE`, a MoVQGAN with temporal layers, and its
vocabulary map), its pixel spec and its `ModelIO` factory (`emu3_io`).

Pipeline (as `Emu3Model.get_image_tokens` / `decode_image_tokens` do it):
- pixels: Emu3ImageProcessor resizes each image to its own size (aspect kept, area within
  [min_pixels, max_pixels], sides multiples of 8). A training tokenizer needs one grid, so
  here every image is scaled to cover a fixed `image_size` (default 512 x 512, the
  processor's min_pixels; any multiple of the spatial factor, non-square allowed) and
  centre-cropped, BICUBIC. Values: x / 255, then (x - 0.5) / 0.5, the released
  checkpoints' preprocessor_config (the class default is CLIP's mean/std; pass
  `image_processor=` to use a loaded processor's constants);
- encode: `vqmodel.encode(pixel_values, image_sizes)`; an image is repeated
  `temporal_downsample_factor` times along time and the temporal convs fold it back to
  one latent frame; nearest codebook entry (Euclidean) -> a (H/8, W/8) grid, codebook 32768;
- decode: `vqmodel.decode(codes (B, rows, cols))` -> first frame -> pixels.
  (`Emu3Model.decode_image_tokens` does the same from LM ids with row ends and three
  trailing special tokens; this class works on plain codes.)
- codes <-> LM ids: `Emu3ImageVocabularyMapping` ('<|visual tokenNNNNNN|>' names). In the
  LM sequence Emu3 ends every row of codes with '<|extra_200|>' (`convert_img2bpe`), so one
  image takes rows * (cols + 1) tokens: `codes_to_token_ids(codes, row_ends=True)`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from PIL import Image
from tokred_core import TokredError
from torch import nn

from ..config import DataConfig
from ..data.model_io import ModelIO
from ..data.pixels import PixelSpec
from .base import (
    HFImageTokenizer,
    find_submodule,
    find_vocabulary_mapping,
    lm_code_ids,
    lookup_codes,
    need_model,
)
from .registry import register_model_io
from .tokenizer import HFTokenizerVocab, load_local_tokenizer, token_id

__all__ = ["emu3_io", "Emu3ImageTokenizer", "emu3_pixel_spec"]

EMU3_MEAN = (0.5, 0.5, 0.5)
EMU3_STD = (0.5, 0.5, 0.5)
EMU3_DEFAULT_SIZE = 512


def emu3_pixel_spec(height: int, width: int) -> PixelSpec:
    return PixelSpec(
        height=height,
        width=width,
        mean=EMU3_MEAN,
        std=EMU3_STD,
        rescale=1 / 255,
        resample=Image.Resampling.BICUBIC,
        fit="crop",
    )


class Emu3ImageTokenizer(HFImageTokenizer):
    """Emu3 images <-> VQ codes <-> LM ids (optionally with Emu3's row-end tokens)."""

    model_type = "emu3"

    def __init__(
        self,
        vqmodel: nn.Module,
        vocabulary_mapping: Any | None = None,
        image_size: int | tuple[int, int] = EMU3_DEFAULT_SIZE,
        image_processor: Any | None = None,
    ):
        factor = int(vqmodel.vision_spatial_factor)
        h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
        h, w = int(h), int(w)
        if h % factor or w % factor:
            raise TokredError(
                f"image_size {h}x{w} is not a multiple of the Emu3 VQ spatial factor {factor}; "
                f"pick sides divisible by {factor}"
            )
        grid = (h // factor, w // factor)
        pixels = emu3_pixel_spec(h, w)
        super().__init__(vqmodel, pixels, grid, vqmodel.config.codebook_size, image_processor)
        self.vocabulary_mapping = vocabulary_mapping
        if vocabulary_mapping is not None:
            self._check_mapping()

    @classmethod
    def from_model(cls, model: nn.Module, **kwargs: Any) -> Emu3ImageTokenizer:
        """From an Emu3Model / Emu3ForConditionalGeneration (or a bare Emu3VQVAE).

        kwargs: image_size (int or (height, width); default 512), image_processor.
        """
        vq = find_submodule(model, "Emu3VQVAE")
        if vq is None:
            raise TokredError(f"{type(model).__name__} holds no Emu3VQVAE")
        mapping = find_vocabulary_mapping(model, "Emu3ImageVocabularyMapping")
        if mapping is None and getattr(getattr(model, "config", None), "vocabulary_map", None):
            from transformers.models.emu3.modeling_emu3 import Emu3ImageVocabularyMapping

            mapping = Emu3ImageVocabularyMapping(model.config.vocabulary_map)
        return cls(vq, mapping, **kwargs)

    def _check_mapping(self) -> None:
        codes = set(self.vocabulary_mapping.img2bpe)
        if codes != set(range(self.codebook_size)):
            raise TokredError(
                f"Emu3 vocabulary_map names {len(codes)} visual tokens but the VQ codebook has "
                f"{self.codebook_size} codes; vocabulary_map and vq_config.codebook_size must agree"
            )
        if self.vocabulary_mapping.eol_token_id is None:
            raise TokredError("Emu3 vocabulary_map lacks '<|extra_200|>', the row-end token")

    # ---- model calls --------------------------------------------------------------------
    def _encode_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        b, _, h, w = pixel_values.shape
        sizes = torch.tensor([[h, w]] * b, dtype=torch.long)
        out = self.vqmodel.encode(pixel_values, sizes, return_dict=True)
        return torch.stack(list(out.image_tokens))  # (B, rows, cols)

    def _decode_pixels(self, codes: torch.Tensor) -> torch.Tensor:
        rows, cols = self.grid
        return self.vqmodel.decode(codes.view(-1, rows, cols))

    # ---- vocabulary ---------------------------------------------------------------------
    @property
    def has_vocabulary(self) -> bool:
        return self.vocabulary_mapping is not None

    @property
    def num_lm_tokens_per_image(self) -> int:
        """rows * (cols + 1): Emu3's LM sequence ends every row with a row-end token."""
        rows, cols = self.grid
        return rows * (cols + 1)

    @property
    def row_end_token_id(self) -> int | None:
        """Id of '<|extra_200|>', which ends each row of image tokens in Emu3's sequences."""
        return None if self.vocabulary_mapping is None else self.vocabulary_mapping.eol_token_id

    def codes_to_token_ids(self, codes: torch.Tensor, row_ends: bool = False) -> torch.Tensor:
        """(B, T) codes -> LM ids: (B, T), or (B, rows * (cols + 1)) with `row_ends`.

        row_ends=True gives exactly what `Emu3Model.get_image_tokens` puts in the sequence
        (its `convert_img2bpe`, row by row).
        """
        if self.vocabulary_mapping is None:
            raise TokredError(self._no_vocabulary_reason())
        device = torch.as_tensor(codes).device
        codes = self.check_codes(codes).cpu()
        mapping = self.vocabulary_mapping
        if not row_ends:
            return mapping.img2bpe_mapping_tensor[codes].long().to(device)
        rows, cols = self.grid
        ids = mapping.convert_img2bpe(codes.view(-1, cols))  # (B*rows, cols+1)
        return ids.reshape(codes.shape[0], rows * (cols + 1)).long().to(device)

    def token_ids_to_codes(self, token_ids: torch.Tensor) -> torch.Tensor:
        """LM image ids, (B, T) or with row ends (B, rows * (cols + 1)) -> (B, T) codes."""
        if self.vocabulary_mapping is None:
            raise TokredError(self._no_vocabulary_reason())
        token_ids = torch.as_tensor(token_ids)
        device = token_ids.device
        ids = token_ids.long().cpu()
        if ids.dim() == 1:
            ids = ids[None]
        rows, cols = self.grid
        if ids.dim() == 2 and ids.shape[1] == self.num_lm_tokens_per_image:
            per_row = ids.view(ids.shape[0], rows, cols + 1)
            if bool((per_row[..., -1] != self.row_end_token_id).any()):
                raise TokredError(
                    f"token ids of length {ids.shape[1]} look row-ended but not every row ends "
                    f"with the row-end token {self.row_end_token_id}"
                )
            ids = per_row[..., :-1].reshape(ids.shape[0], rows * cols)
        elif ids.dim() != 2 or ids.shape[1] != self.num_tokens_per_image:
            raise TokredError(
                f"token ids of shape {tuple(token_ids.shape)}: expected (batch, "
                f"{self.num_tokens_per_image}) or, with row ends, (batch, {self.num_lm_tokens_per_image})"
            )
        codes = lookup_codes(ids, self.vocabulary_mapping.bpe2img, "Emu3 visual tokens")
        return codes.to(device)


EMU3_IMAGE_WRAPPER = "<|image token|>"
EMU3_END_OF_FRAME = "<|extra_201|>"


def emu3_io(model_dir: Path, data: DataConfig, model: nn.Module | None) -> ModelIO:
    model = need_model(model, "emu3")
    vq = Emu3ImageTokenizer.from_model(model, image_size=data.image_size)
    if not vq.has_vocabulary:
        raise TokredError("the Emu3 model's config has no vocabulary_map for its visual tokens")
    tokenizer = load_local_tokenizer(model_dir)
    rows, cols = vq.grid
    prefix = [
        *tokenizer(f"{rows}*{cols}", add_special_tokens=False)["input_ids"],
        token_id(tokenizer, EMU3_IMAGE_WRAPPER, "emu3"),
    ]
    suffix = [token_id(tokenizer, EMU3_END_OF_FRAME, "emu3")]

    def image_ids(codes: torch.Tensor) -> torch.Tensor:
        body = vq.codes_to_token_ids(codes[None], row_ends=True)[0]
        return torch.cat([torch.tensor(prefix), body, torch.tensor(suffix)])

    row = [None] * cols + [vq.row_end_token_id]
    vocab = HFTokenizerVocab(
        tokenizer,
        image_ids=image_ids,
        boi_token="<|image start|>",
        eoi_token="<|image end|>",
        name="emu3",
        code_ids=lm_code_ids(vq),
        image_template=[*prefix, *(row * rows), *suffix],
    )
    return ModelIO(vocab, vq)


register_model_io("emu3", emu3_io)
