"""The common protocol of image tokenizers that wrap a real unified model's own VQ model.

Why: Chameleon, Emu3 and Janus each ship a VQ image tokenizer inside their Hugging Face
model. Training tokred on them needs the same thing the embedded `PatchVQTokenizer`
gives the tiny model: images -> (B, T) codebook indices and back. The subclasses differ
only in how they call their model (`_encode_pixels`, `_decode_pixels`), in the pixel
pre-processing their image processors apply (`PixelSpec`) and in how codes map to the
language-model vocabulary; everything else (input conversion, resizing, batching,
eval-mode handling, validation, post-processing) lives here once.

Conventions shared by every subclass:
- `encode` takes a list of PIL images / (H, W, 3) uint8 arrays (any sizes) or a uint8
  (B, H, W, 3) array or tensor and returns CPU long codes (B, num_tokens_per_image) in
  raster order of the latent grid, values 0..codebook_size-1.
- Images of another size are brought to the model's resolution the way its image
  processor does (`PixelSpec.fit`): "crop" resizes the shortest edge and centre-crops
  (Chameleon), "pad" resizes the longest edge and pads to a square with the mean colour
  (Janus). An image already at the target size is left untouched.
- `decode` returns CPU uint8 (B, H, W, 3) images: the processor's `postprocess`
  (x * std + mean, / rescale) except that values are rounded instead of truncated.
- The VQ model runs under `torch.no_grad()` in eval mode (restored afterwards: Emu3's
  temporal blocks use BatchNorm, whose running statistics training mode would change),
  on the device and in the dtype of its parameters.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image
from tokred_core import TokredError
from torch import nn

from ..data.codes import check_code_rows
from ..data.images import as_uint8_batch
from ..data.pixels import PixelSpec

__all__ = [
    "HFImageTokenizer",
    "find_submodule",
    "find_vocabulary_mapping",
    "nearest_codes",
    "lookup_codes",
    "need_model",
    "lm_code_ids",
]

_CHUNK = 16384  # latent vectors per block in nearest-code searches


def find_submodule(model: nn.Module, class_name: str) -> nn.Module | None:
    """The first module (model itself included) whose class is named `class_name`.

    Matching on the name keeps transformers out of the import path and finds the VQ
    model inside any wrapper (`...ForConditionalGeneration`, peft models).
    """
    for module in model.modules():
        if type(module).__name__ == class_name:
            return module
    return None


def find_vocabulary_mapping(model: nn.Module, class_name: str) -> Any | None:
    """The model's own `vocabulary_mapping` object (a `class_name` instance), if it has one."""
    for module in model.modules():
        mapping = module.__dict__.get("vocabulary_mapping")
        if mapping is not None and type(mapping).__name__ == class_name:
            return mapping
    return None


def lookup_codes(ids: torch.Tensor, bpe2img: dict[int, int], what: str) -> torch.Tensor:
    """LM ids (any shape, CPU long) -> codes through a model's `bpe2img` dict.

    Unlike the models' own `bpe2img_mapping_tensor` (zeros for unknown ids), an id that
    is not an image token raises, naming it.
    """
    lookup = torch.full((max(bpe2img) + 1,), -1, dtype=torch.long)
    lookup[torch.tensor(list(bpe2img.keys()))] = torch.tensor(list(bpe2img.values()))
    inside = (ids >= 0) & (ids < lookup.numel())
    codes = torch.full_like(ids, -1)
    codes[inside] = lookup[ids[inside]]
    if bool((codes < 0).any()):
        bad = ids[codes < 0].unique()[:5].tolist()
        raise TokredError(f"token ids {bad} are not {what}")
    return codes


@contextmanager
def _frozen_eval(module: nn.Module) -> Iterator[None]:
    """Eval mode and no autograd for the duration; every submodule's mode is restored."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, training in modes:
            m.training = training


def nearest_codes(z: torch.Tensor, codebook: torch.Tensor, cosine: bool) -> torch.Tensor:
    """Index of the nearest codebook row for each row of z, in float32, chunked.

    cosine=True compares directions (both sides L2-normalised), as LlamaGen-style
    quantizers do; otherwise squared Euclidean distance.
    """
    z = z.float()
    e = codebook.float()
    if cosine:
        z = nn.functional.normalize(z, p=2, dim=-1)
        e = nn.functional.normalize(e, p=2, dim=-1)
    e2 = (e * e).sum(1)
    out = []
    for start in range(0, z.shape[0], _CHUNK):
        zb = z[start : start + _CHUNK]
        if cosine:
            out.append((zb @ e.T).argmax(1))
        else:
            out.append(((zb * zb).sum(1, keepdim=True) - 2 * zb @ e.T + e2).argmin(1))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long, device=z.device)


class HFImageTokenizer:
    """Images <-> VQ codes through a Hugging Face unified model's own VQ model.

    Subclasses set `model_type` and implement `_encode_pixels` / `_decode_pixels`; those
    whose codes live in the language-model vocabulary also override `codes_to_token_ids`
    and `token_ids_to_codes`. Build them with `from_model(model)` or
    `image_tokenizer_for(model)`.
    """

    model_type: ClassVar[str] = ""

    def __init__(
        self,
        vqmodel: nn.Module,
        pixels: PixelSpec,
        grid: tuple[int, int],
        codebook_size: int,
        image_processor: Any | None = None,
    ):
        """image_processor: a loaded Hugging Face image processor whose normalisation
        constants replace the family's defaults in `pixels` (same geometry)."""
        if image_processor is not None:
            pixels = pixels.with_processor(image_processor)
        rows, cols = grid
        if rows < 1 or cols < 1:
            raise TokredError(f"latent grid {rows}x{cols}: need at least 1x1")
        self.vqmodel = vqmodel
        self.pixels = pixels
        self.grid = (int(rows), int(cols))
        self._codebook_size = int(codebook_size)

    # ---- sizes ------------------------------------------------------------------------
    @property
    def codebook_size(self) -> int:
        """Number of codes (codes are 0..codebook_size-1)."""
        return self._codebook_size

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) in pixels that images are brought to and decoded at."""
        return self.pixels.height, self.pixels.width

    @property
    def num_tokens_per_image(self) -> int:
        rows, cols = self.grid
        return rows * cols

    @property
    def num_lm_tokens_per_image(self) -> int:
        """Tokens one image takes in the language model's sequence (Emu3 adds row ends)."""
        return self.num_tokens_per_image

    @property
    def can_decode(self) -> bool:
        return True

    @property
    def has_vocabulary(self) -> bool:
        """Whether codes map to language-model token ids (`codes_to_token_ids`)."""
        return False

    @property
    def device(self) -> torch.device:
        return next(self.vqmodel.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.vqmodel.parameters()).dtype

    # ---- pixels -----------------------------------------------------------------------
    def fit_images(self, images: Any) -> np.ndarray:
        """Images of any sizes -> uint8 (B, height, width, 3) at the model's resolution."""
        if isinstance(images, (Image.Image,)):
            images = [images]
        if isinstance(images, (torch.Tensor, np.ndarray)):
            images = as_uint8_batch(images)  # checks shape and dtype
            if tuple(images.shape[1:3]) == self.image_size:
                return images
        items = list(images)
        if not items:
            raise TokredError("got an empty list of images")
        return np.stack([self.pixels.fit_image(im) for im in items])

    def preprocess(self, images: Any) -> torch.Tensor:
        """Images -> float32 (B, 3, height, width) normalised as the model's processor does."""
        return self.pixels.normalize(self.fit_images(images))

    def postprocess(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """VQ decoder output (B, 3, H, W) -> uint8 (B, H, W, 3) on the CPU."""
        return self.pixels.denormalize(pixel_values)

    # ---- codes ------------------------------------------------------------------------
    def encode(self, images: Any, batch_size: int | None = None) -> torch.Tensor:
        """Images -> CPU long codes (B, num_tokens_per_image), raster order over the grid."""
        pixel_values = self.preprocess(images)
        out = []
        with _frozen_eval(self.vqmodel):
            for chunk in _chunks(pixel_values, batch_size):
                px = chunk.to(self.device, self.dtype)
                codes = self._encode_pixels(px).reshape(px.shape[0], -1)
                out.append(codes.to("cpu", torch.long))
        codes = torch.cat(out)
        if codes.shape[1] != self.num_tokens_per_image:
            raise TokredError(
                f"{self.model_type} VQ model gave {codes.shape[1]} codes per image, expected "
                f"{self.num_tokens_per_image}: the VQ config and image size {self.image_size} disagree"
            )
        return codes

    def decode(
        self, codes: torch.Tensor | np.ndarray, batch_size: int | None = None
    ) -> torch.Tensor:
        """(B, T) or (T,) codes -> CPU uint8 images (B, height, width, 3)."""
        if not self.can_decode:
            raise TokredError(self._no_decode_reason())
        codes = self.check_codes(codes)
        out = []
        with _frozen_eval(self.vqmodel):
            for chunk in _chunks(codes, batch_size):
                pixel_values = self._decode_pixels(chunk.to(self.device))
                out.append(self.postprocess(pixel_values))
        images = torch.cat(out)
        if tuple(images.shape[1:3]) != self.image_size:
            raise TokredError(
                f"{self.model_type} VQ decoder gave {tuple(images.shape[1:3])} images, "
                f"expected {self.image_size}"
            )
        return images

    def check_codes(self, codes: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Validate codes: long (B, num_tokens_per_image) with values in the codebook."""
        codes = torch.as_tensor(codes)
        if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
            raise TokredError(f"codes must be integers, got dtype {codes.dtype}")
        return check_code_rows(codes.long(), self.num_tokens_per_image, self.codebook_size)

    # ---- vocabulary -------------------------------------------------------------------
    def codes_to_token_ids(self, codes: torch.Tensor) -> torch.Tensor:
        """VQ codes -> the language model's token ids (models with image tokens in the vocabulary)."""
        raise TokredError(self._no_vocabulary_reason())

    def token_ids_to_codes(self, token_ids: torch.Tensor) -> torch.Tensor:
        """The language model's image token ids -> VQ codes (inverse of `codes_to_token_ids`)."""
        raise TokredError(self._no_vocabulary_reason())

    # ---- for subclasses ---------------------------------------------------------------
    def _encode_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Normalised (B, 3, H, W) on the model's device -> codes (B, rows, cols) or (B*T,)."""
        raise NotImplementedError

    def _decode_pixels(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (B, T) on the model's device -> normalised pixels (B, 3, H, W)."""
        raise NotImplementedError

    def _no_decode_reason(self) -> str:
        return f"{self.model_type} image tokenizer cannot decode"

    def _no_vocabulary_reason(self) -> str:
        return (
            f"this {self.model_type} image tokenizer has no vocabulary mapping: build it from the "
            "full model (not the bare VQ model) to map codes to token ids"
        )

    def config(self) -> dict:
        """A JSON-able description (for logs and run records)."""
        return {
            "format": "tokred-hf-vq",
            "model_type": self.model_type,
            "image_size": list(self.image_size),
            "grid": list(self.grid),
            "codebook_size": self.codebook_size,
            "mean": list(self.pixels.mean),
            "std": list(self.pixels.std),
            "rescale": self.pixels.rescale,
            "fit": self.pixels.fit,
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(codebook_size={self.codebook_size}, "
            f"image_size={self.image_size}, grid={self.grid}, "
            f"tokens_per_image={self.num_tokens_per_image})"
        )


def _chunks(x: torch.Tensor, batch_size: int | None) -> list[torch.Tensor]:
    if batch_size is None:
        return [x]
    if batch_size < 1:
        raise TokredError(f"batch_size {batch_size}: need at least 1")
    return list(x.split(batch_size))


def need_model(model: nn.Module | None, family: str) -> nn.Module:
    """The loaded model, which a family's factory needs because its VQ model lives in it."""
    if model is None:
        raise TokredError(
            f"the {family} image tokenizer lives inside the model's weights: load the model "
            "first and pass it to build_model_io"
        )
    return model


def lm_code_ids(vq: Any) -> torch.Tensor:
    """(codebook_size,) the LM id of each code, from the model's own vocabulary mapping."""
    img2bpe = vq.vocabulary_mapping.img2bpe
    return torch.tensor([int(img2bpe[c]) for c in range(vq.codebook_size)])
