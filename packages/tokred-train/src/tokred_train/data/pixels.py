"""The pixels a model's own image processor feeds its encoder: geometry and normalisation.

Why one spec: Chameleon, Emu3 and Janus each resize, crop or pad and normalise images in
their own way before their VQ model (or, for Janus understanding, their SigLIP encoder)
sees them. The data side (which fits understanding images for a model that reads pixels)
and the families' VQ wrappers share this one description of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from tokred_core import TokredError

from .images import as_uint8_image

__all__ = ["PixelSpec"]


@dataclass(frozen=True)
class PixelSpec:
    """How one model's image processor turns uint8 pixels into VQ input, and back.

    normalised = (pixel * rescale - mean) / std, per RGB channel.
    """

    height: int
    width: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    rescale: float
    resample: Image.Resampling
    fit: Literal["crop", "pad"]
    """'crop': scale to cover the size, centre crop; 'pad': longest edge to size, pad to square."""
    min_size: int = 1
    """'pad' only: the short side never shrinks below this (JanusImageProcessor's min_size)."""

    def __post_init__(self) -> None:
        if self.height < 1 or self.width < 1:
            raise TokredError(f"image size {self.height}x{self.width}: need at least 1x1")
        if self.fit not in ("crop", "pad"):
            raise TokredError(f"fit {self.fit!r}: expected 'crop' or 'pad'")
        if self.fit == "pad" and self.height != self.width:
            raise TokredError(f"fit 'pad' needs a square size, got {self.height}x{self.width}")
        if len(self.mean) != 3 or len(self.std) != 3 or any(s == 0 for s in self.std):
            raise TokredError(f"mean {self.mean} / std {self.std}: need 3 values, std non-zero")

    @property
    def pad_color(self) -> tuple[int, int, int]:
        """JanusImageProcessor's background colour: int(mean * 255) per channel."""
        return tuple(int(m * 255) for m in self.mean)  # type: ignore[return-value]

    def with_processor(self, image_processor: Any) -> PixelSpec:
        """The same geometry with a loaded image processor's normalisation constants."""
        mean = getattr(image_processor, "image_mean", None)
        std = getattr(image_processor, "image_std", None)
        rescale = getattr(image_processor, "rescale_factor", None)
        return PixelSpec(
            height=self.height,
            width=self.width,
            mean=_triple(mean) if mean is not None else self.mean,
            std=_triple(std) if std is not None else self.std,
            rescale=float(rescale) if rescale is not None else self.rescale,
            resample=self.resample,
            fit=self.fit,
            min_size=int(getattr(image_processor, "min_size", self.min_size) or self.min_size),
        )

    # ---- geometry ---------------------------------------------------------------------
    def fit_image(self, image: Any) -> np.ndarray:
        """One image (PIL or uint8 (H, W, 3)) -> uint8 (height, width, 3)."""
        pil = (
            image.convert("RGB")
            if isinstance(image, Image.Image)
            else Image.fromarray(as_uint8_image(image))
        )
        w, h = pil.size
        if (h, w) == (self.height, self.width):
            return np.asarray(pil, dtype=np.uint8)
        if self.fit == "crop":
            # Scale to cover the target, then centre-crop. For a square target this is
            # ChameleonImageProcessor exactly: shortest edge -> size, long edge truncated.
            if self.height / h >= self.width / w:
                new_h, new_w = self.height, max(self.width, int(self.height * w / h))
            else:
                new_h, new_w = max(self.height, int(self.width * h / w)), self.width
            pil = pil.resize((new_w, new_h), self.resample)
            top, left = (new_h - self.height) // 2, (new_w - self.width) // 2
            pil = pil.crop((left, top, left + self.width, top + self.height))
            return np.asarray(pil, dtype=np.uint8)
        # JanusImageProcessor: longest edge -> size (rounded), pad to square, centred.
        size = self.height
        delta = size / max(h, w)
        new_h = max(round(h * delta), self.min_size)
        new_w = max(round(w * delta), self.min_size)
        pil = pil.resize((new_w, new_h), self.resample)
        canvas = Image.new("RGB", (size, size), self.pad_color)
        canvas.paste(pil, ((size - new_w) // 2, (size - new_h) // 2))
        return np.asarray(canvas, dtype=np.uint8)

    # ---- values -----------------------------------------------------------------------
    def normalize(self, batch: np.ndarray) -> torch.Tensor:
        """uint8 (B, H, W, 3) -> float32 (B, 3, H, W) model input."""
        x = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).to(torch.float32)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, 3, 1, 1)
        return (x * self.rescale - mean) / std

    def denormalize(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Model output (B, 3, H, W) -> uint8 (B, H, W, 3) on the CPU, rounded and clipped."""
        x = pixel_values.detach().to("cpu", torch.float32)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, 3, 1, 1)
        x = (x * std + mean) / self.rescale
        return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def _triple(values: Any) -> tuple[float, float, float]:
    if isinstance(values, (int, float)):
        return (float(values),) * 3  # type: ignore[return-value]
    out = tuple(float(v) for v in values)
    if len(out) != 3:
        raise TokredError(f"expected 3 per-channel values, got {values!r}")
    return out  # type: ignore[return-value]
