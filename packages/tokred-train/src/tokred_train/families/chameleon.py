"""Chameleon: its image tokenizer (`ChameleonVQVAE`, encoder only, and its BPE vocabulary
map), its pixel spec and its `ModelIO` factory (`chameleon_io`).

Pipeline (as `ChameleonModel.get_image_tokens` and `ChameleonImageProcessor` do it):
- pixels: shortest edge resized to `vq_config.resolution` (512) with LANCZOS, centre crop
  to a square, then x * 0.0078 - 1 (the processor's rescale_factor 0.0078 with mean 1,
  std 1: roughly [-1, 1]);
- `vqmodel.encode(pixel_values).image_tokens`: encoder -> quant_conv -> nearest codebook
  entry (Euclidean), a grid of resolution / 2**(len(channel_multiplier) - 1) per side
  (32 x 32 = 1024 codes for the released 7B/30B models, codebook 8192);
- codes <-> LM ids: `ChameleonImageVocabularyMapping` (the tokens named IMGIMG<digits as
  letters>Z); codes -> ids through its `convert_img2bpe`, ids -> codes through its `bpe2img`.

Decoding is not supported: transformers' `ChameleonVQVAE` holds only the encoder,
quantizer and `post_quant_conv` (the released checkpoint has no decoder weights in the
Hugging Face format), so there is nothing to turn codes back into pixels.
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
from .tokenizer import HFTokenizerVocab, load_local_tokenizer

__all__ = ["chameleon_io", "ChameleonImageTokenizer", "chameleon_pixel_spec"]

CHAMELEON_RESCALE = 0.0078  # ChameleonImageProcessor.rescale_factor (not 1/127.5)
CHAMELEON_MEAN = (1.0, 1.0, 1.0)
CHAMELEON_STD = (1.0, 1.0, 1.0)


def chameleon_pixel_spec(size: int) -> PixelSpec:
    """ChameleonImageProcessor's defaults (they are the released checkpoint's) at `size`."""
    return PixelSpec(
        height=size,
        width=size,
        mean=CHAMELEON_MEAN,
        std=CHAMELEON_STD,
        rescale=CHAMELEON_RESCALE,
        resample=Image.Resampling.LANCZOS,
        fit="crop",
    )


class ChameleonImageTokenizer(HFImageTokenizer):
    """Chameleon images -> VQ codes -> BPE ids (no decode: see the module docstring)."""

    model_type = "chameleon"

    def __init__(
        self,
        vqmodel: nn.Module,
        vocabulary_mapping: Any | None = None,
        image_size: int | None = None,
        image_processor: Any | None = None,
    ):
        cfg = vqmodel.config
        factor = 2 ** (len(cfg.channel_multiplier) - 1)
        size = int(image_size if image_size is not None else cfg.resolution)
        if size % factor:
            raise TokredError(
                f"image_size {size} is not a multiple of the Chameleon VQ downsampling factor {factor}"
            )
        grid = (size // factor, size // factor)
        pixels = chameleon_pixel_spec(size)
        super().__init__(vqmodel, pixels, grid, cfg.num_embeddings, image_processor)
        self.vocabulary_mapping = vocabulary_mapping
        if vocabulary_mapping is not None:
            self._check_mapping()

    @classmethod
    def from_model(cls, model: nn.Module, **kwargs: Any) -> ChameleonImageTokenizer:
        """From a ChameleonModel / ChameleonForConditionalGeneration (or a bare ChameleonVQVAE).

        kwargs: image_size (default vq_config.resolution), image_processor (a loaded
        ChameleonImageProcessor whose mean/std/rescale_factor replace the defaults).
        """
        vq = find_submodule(model, "ChameleonVQVAE")
        if vq is None:
            raise TokredError(f"{type(model).__name__} holds no ChameleonVQVAE")
        mapping = find_vocabulary_mapping(model, "ChameleonImageVocabularyMapping")
        if mapping is None and getattr(getattr(model, "config", None), "vocabulary_map", None):
            from transformers.models.chameleon.modeling_chameleon import (
                ChameleonImageVocabularyMapping,
            )

            mapping = ChameleonImageVocabularyMapping(model.config.vocabulary_map)
        return cls(vq, mapping, **kwargs)

    def _check_mapping(self) -> None:
        codes = set(self.vocabulary_mapping.img2bpe)
        if codes != set(range(self.codebook_size)):
            raise TokredError(
                f"Chameleon vocabulary_map names {len(codes)} image tokens (IMGIMG...) but the VQ "
                f"codebook has {self.codebook_size} codes; the config's vocabulary_map and "
                "vq_config.num_embeddings must describe the same codebook"
            )

    # ---- model calls --------------------------------------------------------------------
    def _encode_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.vqmodel.encode(pixel_values, return_dict=True).image_tokens

    @property
    def can_decode(self) -> bool:
        return False

    def _no_decode_reason(self) -> str:
        return (
            "Chameleon images cannot be decoded: transformers' ChameleonVQVAE has no decoder "
            "(only the encoder and quantizer were ported), so codes cannot become pixels; use "
            "Emu3 or Janus for generation experiments that need images back"
        )

    # ---- vocabulary ---------------------------------------------------------------------
    @property
    def has_vocabulary(self) -> bool:
        return self.vocabulary_mapping is not None

    @property
    def image_placeholder_id(self) -> int | None:
        """Id of '<image>', the placeholder `ChameleonModel` fills with image tokens."""
        return None if self.vocabulary_mapping is None else self.vocabulary_mapping.image_token_id

    def codes_to_token_ids(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, T) codes -> (B, T) BPE ids via the model's `convert_img2bpe` (same device)."""
        if self.vocabulary_mapping is None:
            raise TokredError(self._no_vocabulary_reason())
        device = torch.as_tensor(codes).device
        codes = self.check_codes(codes)
        return self.vocabulary_mapping.convert_img2bpe(codes).long().to(device)

    def token_ids_to_codes(self, token_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) BPE image-token ids -> (B, T) codes via the model's `bpe2img` (same device)."""
        if self.vocabulary_mapping is None:
            raise TokredError(self._no_vocabulary_reason())
        token_ids = torch.as_tensor(token_ids)
        device = token_ids.device
        ids = token_ids.long().cpu()
        if ids.dim() == 1:
            ids = ids[None]
        if ids.dim() != 2 or ids.shape[1] != self.num_tokens_per_image:
            raise TokredError(
                f"token ids of shape {tuple(token_ids.shape)}: expected "
                f"(batch, {self.num_tokens_per_image})"
            )
        codes = lookup_codes(ids, self.vocabulary_mapping.bpe2img, "Chameleon image tokens")
        return codes.to(device)


def chameleon_io(model_dir: Path, data: DataConfig, model: nn.Module | None) -> ModelIO:
    model = need_model(model, "chameleon")
    vq = ChameleonImageTokenizer.from_model(model, image_size=data.image_size)
    if not vq.has_vocabulary:
        raise TokredError("the Chameleon model's config has no vocabulary_map for its image tokens")
    tokenizer = load_local_tokenizer(model_dir)
    vocab = HFTokenizerVocab(
        tokenizer,
        image_ids=lambda codes: vq.codes_to_token_ids(codes[None])[0],
        boi_token="<racm3:break>",
        eoi_token="<eoss>",
        name="chameleon",
        code_ids=lm_code_ids(vq),
        image_template=[None] * vq.num_tokens_per_image,
    )
    return ModelIO(vocab, vq)


register_model_io("chameleon", chameleon_io)
