"""Turn whatever holds images into one uint8 (B, H, W, 3) array.

Why: images reach the VQ tokenizer and the detector from many places (a `datasets`
column of PIL images, a numpy batch, a torch tensor from a model's decode), and every
consumer needs the same thing, so the conversion and its error messages live here once.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from PIL import Image
from tokred_core import TokredError

__all__ = ["ImagesLike", "as_uint8_image", "as_uint8_batch", "square_resize"]

ImagesLike = np.ndarray | torch.Tensor | Iterable[Any]


def as_uint8_image(image: Any) -> np.ndarray:
    """One image (PIL, (H, W, 3) array or tensor) -> (H, W, 3) uint8 RGB array."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise TokredError(f"expected an RGB image of shape (H, W, 3), got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise TokredError(f"expected uint8 pixels (0..255), got dtype {arr.dtype}; convert first")
    return arr


def as_uint8_batch(images: ImagesLike) -> np.ndarray:
    """A batch of images (uint8 (B, H, W, 3) array/tensor, or an iterable of PIL/arrays).

    All images must share one size: the tokenizer maps a fixed grid of patches to tokens.
    """
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    if isinstance(images, np.ndarray):
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[-1] != 3:
            raise TokredError(f"expected images of shape (B, H, W, 3), got shape {images.shape}")
        if images.dtype != np.uint8:
            raise TokredError(f"expected uint8 pixels (0..255), got dtype {images.dtype}")
        return images
    arrays = [as_uint8_image(im) for im in images]
    if not arrays:
        raise TokredError("got an empty list of images")
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise TokredError(f"images have different sizes {sorted(shapes)}: resize them to one size")
    return np.stack(arrays)


def square_resize(image: Any, size: int) -> np.ndarray:
    """Centre-crop to a square and resize to size x size: (size, size, 3) uint8.

    Why: real data sets hold images of many sizes, while a patch tokenizer maps a fixed
    grid to tokens; this is the one conversion a loader's images need before `encode`.
    """
    if size < 1:
        raise TokredError(f"size {size}: need at least 1 pixel")
    pil = (
        image.convert("RGB")
        if isinstance(image, Image.Image)
        else Image.fromarray(as_uint8_image(image))
    )
    w, h = pil.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    pil = pil.crop((left, top, left + side, top + side))
    if side != size:
        pil = pil.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(pil, dtype=np.uint8)
