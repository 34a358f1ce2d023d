"""A PNG grid of generated images with their prompts, drawn with PIL only.

Why PIL: the training package must not depend on matplotlib (the app does); a grid of
upscaled images with wrapped captions is all a reader needs to eyeball generation.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont
from tokred_core import TokredError

from ..data.images import as_uint8_batch

__all__ = ["save_sample_grid"]

_TEXT = (20, 20, 20)
_OK = (20, 140, 40)
_BAD = (200, 30, 30)
_FRAME = (170, 170, 170)


def save_sample_grid(
    images: Any,
    prompts: Sequence[str],
    path: str | os.PathLike[str],
    *,
    columns: int = 4,
    cell: int = 128,
    marks: Sequence[bool | None] | None = None,
    references: Any = None,
    title: str | None = None,
) -> Path:
    """Write a grid of images, each above its wrapped prompt, as a PNG; returns the path.

    images: uint8 (B, H, W, 3) or a list of images; upscaled (nearest) to `cell` pixels.
    marks: optional pass/fail per image (a green or red frame, e.g. the detector's 'all').
    references: optional images of the same count shown small beside each (ground truth).
    """
    batch = as_uint8_batch(images)
    if len(prompts) != batch.shape[0]:
        raise TokredError(f"{batch.shape[0]} images but {len(prompts)} prompts: give one each")
    if marks is not None and len(marks) != batch.shape[0]:
        raise TokredError(f"{batch.shape[0]} images but {len(marks)} marks")
    refs = as_uint8_batch(references) if references is not None else None
    if refs is not None and refs.shape[0] != batch.shape[0]:
        raise TokredError(f"{batch.shape[0]} images but {refs.shape[0]} reference images")
    if columns < 1 or cell < 16:
        raise TokredError(f"columns={columns}, cell={cell}: need columns >= 1 and cell >= 16")
    font = ImageFont.load_default()
    chars = max(8, (cell + (cell // 2 if refs is not None else 0)) // 6)
    wrapped = [textwrap.wrap(p, chars)[:4] or [""] for p in prompts]
    line_h = 12
    pad = 6
    ref_w = cell // 2 + pad if refs is not None else 0
    cell_w = cell + ref_w + 2 * pad
    cell_h = cell + 4 * line_h + 3 * pad
    rows = max(1, -(-batch.shape[0] // columns))
    top = 2 * line_h if title else 0
    canvas = Image.new("RGB", (columns * cell_w, rows * cell_h + top), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad, pad // 2), title, fill=_TEXT, font=font)
    for i, img in enumerate(batch):
        r, c = divmod(i, columns)
        x, y = c * cell_w + pad, r * cell_h + pad + top
        canvas.paste(Image.fromarray(img).resize((cell, cell), Image.Resampling.NEAREST), (x, y))
        draw.rectangle((x - 1, y - 1, x + cell, y + cell), outline=_FRAME)
        if refs is not None:
            half = cell // 2
            small = Image.fromarray(refs[i]).resize((half, half), Image.Resampling.NEAREST)
            rx = x + cell + pad
            canvas.paste(small, (rx, y))
            draw.rectangle((rx - 1, y - 1, rx + half, y + half), outline=_FRAME)
            draw.text((x + cell + pad, y + cell // 2 + 2), "target", fill=_TEXT, font=font)
        if marks is not None and marks[i] is not None:
            colour = _OK if marks[i] else _BAD
            draw.rectangle((x - 3, y - 3, x + cell + 2, y + cell + 2), outline=colour, width=3)
        for k, line in enumerate(wrapped[i]):
            draw.text((x, y + cell + pad + k * line_h), line, fill=_TEXT, font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, format="PNG")
    return path
