"""Janus(-Pro): its image tokenizer (`JanusVQVAE`, LlamaGen VQ-16, in
`JanusModel.vqmodel`), its SigLIP pixel spec and its `ModelIO` factory (`janus_io`).

Pipeline:
- pixels: JanusImageProcessor: longest edge resized to 384 (BICUBIC, short side at least
  14), padded to a centred square with the mean colour, x / 255, then (x - 0.5) / 0.5 (the
  released checkpoints' SigLIP constants; the class default is CLIP's; pass
  `image_processor=` to use a loaded processor's). The size is fixed by the config:
  vq_config.num_patches * 2**(len(channel_multiplier) - 1) = 24 * 16 = 384.
- encode: `vqmodel.encoder` -> `quant_conv` -> nearest codebook entry by *cosine*
  (both sides L2-normalised), a 24 x 24 grid = 576 codes from a 16384 codebook.
  Why cosine: LlamaGen's quantizer (codebook_l2_norm=True, which Janus uses) normalises
  both sides, and transformers' own decode path agrees (`get_codebook_entry` normalises
  the codebook rows), but `JanusVQVAEVectorQuantizer.forward` searches by plain
  Euclidean distance on unnormalised vectors, which picks different codes for real
  weights. `l2_normalized=False` reproduces `vqmodel.encode(...).image_tokens` exactly.
- decode: `vqmodel.decode(codes)` (what `JanusForConditionalGeneration.decode_image_tokens`
  calls, before its permute to channels-last) -> pixels.
- vocabulary: none. Janus keeps image codes out of the LM vocabulary: generation embeds
  codes with `generation_embeddings` and predicts them with `generation_head` over the
  codebook, so the codes themselves are the generation targets.
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
from .base import HFImageTokenizer, find_submodule, nearest_codes, need_model
from .registry import register_model_io
from .tokenizer import HFTokenizerVocab, load_local_tokenizer

__all__ = ["janus_io", "JanusImageTokenizer", "janus_pixel_spec"]

JANUS_MEAN = (0.5, 0.5, 0.5)
JANUS_STD = (0.5, 0.5, 0.5)
JANUS_MIN_SIZE = 14


def janus_pixel_spec(size: int) -> PixelSpec:
    return PixelSpec(
        height=size,
        width=size,
        mean=JANUS_MEAN,
        std=JANUS_STD,
        rescale=1 / 255,
        resample=Image.Resampling.BICUBIC,
        fit="pad",
        min_size=JANUS_MIN_SIZE,
    )


class JanusImageTokenizer(HFImageTokenizer):
    """Janus images <-> VQ codes (the codes are Janus's generation targets directly)."""

    model_type = "janus"

    def __init__(
        self,
        vqmodel: nn.Module,
        l2_normalized: bool = True,
        image_processor: Any | None = None,
    ):
        cfg = vqmodel.config
        factor = 2 ** (len(cfg.channel_multiplier) - 1)
        side = int(vqmodel.quantize.quant_state_dims[0])
        pixels = janus_pixel_spec(side * factor)
        super().__init__(vqmodel, pixels, (side, side), cfg.num_embeddings, image_processor)
        self.l2_normalized = bool(l2_normalized)

    @classmethod
    def from_model(cls, model: nn.Module, **kwargs: Any) -> JanusImageTokenizer:
        """From a JanusModel / JanusForConditionalGeneration (or a bare JanusVQVAE).

        kwargs: l2_normalized (default True, see the module docstring), image_processor.
        """
        vq = find_submodule(model, "JanusVQVAE")
        if vq is None:
            raise TokredError(f"{type(model).__name__} holds no JanusVQVAE")
        return cls(vq, **kwargs)

    def _encode_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        vq = self.vqmodel
        if not self.l2_normalized:
            return vq.encode(pixel_values, return_dict=True).image_tokens
        z = vq.quant_conv(vq.encoder(pixel_values))  # (B, C, rows, cols)
        b, c = z.shape[:2]
        flat = z.permute(0, 2, 3, 1).reshape(-1, c)
        return nearest_codes(flat, vq.quantize.embedding.weight, cosine=True).view(b, -1)

    def _decode_pixels(self, codes: torch.Tensor) -> torch.Tensor:
        return self.vqmodel.decode(codes)

    def _no_vocabulary_reason(self) -> str:
        return (
            "Janus has no image tokens in its LM vocabulary: generation reads codes through "
            "generation_embeddings and predicts them with generation_head, so use the codes "
            "themselves as image ids and targets"
        )

    def config(self) -> dict:
        return {**super().config(), "l2_normalized": self.l2_normalized}


def janus_io(model_dir: Path, data: DataConfig, model: nn.Module | None) -> ModelIO:
    model = need_model(model, "janus")
    config = model.config
    vq = JanusImageTokenizer.from_model(model)
    tokenizer = load_local_tokenizer(model_dir)
    placeholder = int(config.image_token_id)
    num_vision = int(config.vision_config.num_image_tokens)

    def understood(codes: torch.Tensor) -> torch.Tensor:
        # The codes are not read: SigLIP features of the pixels replace the placeholders.
        return torch.full((num_vision,), placeholder, dtype=torch.long)

    vocab = HFTokenizerVocab(
        tokenizer,
        image_ids=lambda codes: codes,
        input_image_ids=understood,
        boi_token="<begin_of_image>",
        eoi_token="<end_of_image>",
        name="janus",
        code_ids=torch.arange(vq.codebook_size),  # generation_head's outputs are the codes
        image_template=[None] * vq.num_tokens_per_image,
    )
    pixels = janus_pixel_spec(int(config.vision_config.image_size))
    return ModelIO(vocab, vq, understanding_pixels=pixels, loss_path="janus")


register_model_io("janus", janus_io)
