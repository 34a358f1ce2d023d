"""A deterministic detector for the shapes set: a small GenEval-like check.

Why: generation quality on the shapes set is judged like GenEval judges real models:
does the image hold the requested object, in the requested colour, at the requested
place? On plain-background synthetic images that needs no learned detector. The
detector finds connected blobs of non-background pixels and reads off
- colour: the majority nearest-palette colour of the blob's pixels,
- position: the 2x2 grid cell of the blob's centroid,
- kind: the fill ratio of the blob's bounding box (square ~1.0, circle ~pi/4,
  triangle ~0.5), thresholded halfway between the ideal ratios,
- size: the bounding-box side against the midpoint of the small and large sides,
- count: the number of blobs above a minimum area.
It is exact on ground-truth renders and tolerant of the blur of a VQ reconstruction.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tokred_core import TokredError

from ..images import as_uint8_batch, as_uint8_image
from .dataset import BACKGROUND, COUNT_WORDS, KINDS, PALETTE, POSITIONS, SIZES, shape_radius

__all__ = [
    "ATTRIBUTES",
    "Detection",
    "detect",
    "detect_dominant",
    "check",
    "check_scene",
    "score",
]

#: Attributes `check` understands, in report order.
ATTRIBUTES: tuple[str, ...] = ("color", "kind", "position", "size", "count")

# Fill ratio thresholds: midpoints between triangle (0.5), circle (pi/4) and square (1.0).
_TRIANGLE_CIRCLE = (0.5 + math.pi / 4) / 2
_CIRCLE_SQUARE = (math.pi / 4 + 1.0) / 2


@dataclass(frozen=True)
class Detection:
    """One blob: its attributes and the measurements they came from."""

    color: str
    kind: str
    position: str
    size: str
    area: int
    centroid: tuple[float, float]  # (x, y) in pixels
    bbox: tuple[int, int, int, int]  # (x0, y0, x1, y1), inclusive
    fill_ratio: float

    def as_dict(self) -> dict[str, str]:
        return {
            "kind": self.kind,
            "color": self.color,
            "position": self.position,
            "size": self.size,
        }


def _components(mask: np.ndarray) -> list[np.ndarray]:
    """8-connected components of a bool mask, as arrays of flat pixel indices (BFS)."""
    h, w = mask.shape
    seen = ~mask.copy()
    comps: list[np.ndarray] = []
    for start in np.flatnonzero(mask):
        if seen.flat[start]:
            continue
        seen.flat[start] = True
        stack, pix = [int(start)], []
        while stack:
            p = stack.pop()
            pix.append(p)
            y, x = divmod(p, w)
            for dy in (-1, 0, 1):
                yy = y + dy
                if yy < 0 or yy >= h:
                    continue
                for dx in (-1, 0, 1):
                    xx = x + dx
                    if 0 <= xx < w and not seen[yy, xx]:
                        seen[yy, xx] = True
                        stack.append(yy * w + xx)
        comps.append(np.asarray(pix))
    return comps


def detect(
    image: Any,
    background: tuple[int, int, int] = BACKGROUND,
    min_area_frac: float = 0.005,
) -> list[Detection]:
    """All shape blobs in an RGB uint8 image, largest first.

    A pixel is foreground when a palette colour is nearer to it than the background is.
    Blobs smaller than `min_area_frac` of the image (VQ speckle) are ignored.
    """
    img = as_uint8_image(image).astype(np.float32)
    h, w, _ = img.shape
    names = list(PALETTE)
    refs = np.asarray([background, *(PALETTE[n] for n in names)], dtype=np.float32)
    d = ((img[:, :, None, :] - refs[None, None]) ** 2).sum(-1)  # (H, W, 1 + colours)
    nearest = d.argmin(-1)  # 0 = background
    fg = nearest > 0
    size_split = sum(2 * shape_radius(s, h) for s in SIZES) / len(SIZES)
    min_area = max(1, int(min_area_frac * h * w))
    out: list[Detection] = []
    for comp in _components(fg):
        if comp.size < min_area:
            continue
        ys, xs = np.divmod(comp, w)
        votes = np.bincount(nearest.flat[comp], minlength=len(refs))[1:]
        color = names[int(votes.argmax())]
        cx, cy = float(xs.mean()) + 0.5, float(ys.mean()) + 0.5
        position = POSITIONS[2 * int(cy >= h / 2) + int(cx >= w / 2)]
        x0, x1, y0, y1 = int(xs.min()), int(xs.max()), int(ys.min()), int(ys.max())
        bw, bh = x1 - x0 + 1, y1 - y0 + 1
        fill = comp.size / (bw * bh)
        kind = (
            "triangle"
            if fill < _TRIANGLE_CIRCLE
            else "circle"
            if fill < _CIRCLE_SQUARE
            else "square"
        )
        size = SIZES[int(max(bw, bh) >= size_split)]
        out.append(
            Detection(color, kind, position, size, int(comp.size), (cx, cy), (x0, y0, x1, y1), fill)
        )
    out.sort(key=lambda det: -det.area)
    return out


def detect_dominant(image: Any, background: tuple[int, int, int] = BACKGROUND) -> Detection | None:
    """The largest blob, or None on an empty image."""
    found = detect(image, background)
    return found[0] if found else None


def _count_value(value: Any) -> int:
    if isinstance(value, str):
        if value not in COUNT_WORDS:
            raise TokredError(
                f"expected count {value!r}: use an int or one of {', '.join(COUNT_WORDS)}"
            )
        return COUNT_WORDS.index(value)
    return int(value)


def check(
    image: Any, expected: Mapping[str, Any], background: tuple[int, int, int] = BACKGROUND
) -> dict[str, bool]:
    """Per-attribute correctness of an image against `expected`, plus 'all'.

    expected: any of kind, color, position, size (compared with the dominant blob) and
    count (an int or a count word, compared with the number of blobs). Other keys are an
    error, so a typo cannot silently pass. An empty image fails every attribute.
    """
    unknown = set(expected) - set(ATTRIBUTES)
    if unknown:
        raise TokredError(
            f"unknown attributes {sorted(unknown)}: check understands {', '.join(ATTRIBUTES)}"
        )
    if "kind" in expected and expected["kind"] not in KINDS:
        raise TokredError(f"expected kind {expected['kind']!r}: use one of {', '.join(KINDS)}")
    found = detect(image, background)
    result: dict[str, bool] = {}
    for attr in ATTRIBUTES:
        if attr not in expected:
            continue
        if attr == "count":
            result[attr] = len(found) == _count_value(expected[attr])
        else:
            result[attr] = bool(found) and getattr(found[0], attr) == expected[attr]
    result["all"] = all(result.values())
    return result


def check_scene(
    image: Any,
    shapes: Sequence[Mapping[str, Any]],
    background: tuple[int, int, int] = BACKGROUND,
) -> dict[str, bool]:
    """Multi-shape check: every expected shape is matched to the blob in its grid cell.

    shapes: the dataset's `shapes` list (each with a position). Per attribute, True when
    every expected shape has a blob in its cell with that attribute right ('position':
    a blob is in the cell at all); 'count' compares the number of blobs; plus 'all'.
    """
    found = detect(image, background)
    by_cell: dict[str, Detection] = {}
    for det in found:  # largest first, so the largest blob of a cell wins
        by_cell.setdefault(det.position, det)
    result = {"position": True, "color": True, "kind": True, "size": True}
    for spec in shapes:
        if "position" not in spec:
            raise TokredError(f"shape {dict(spec)} has no position: check_scene matches by cell")
        det = by_cell.get(spec["position"])
        result["position"] &= det is not None
        for attr in ("color", "kind", "size"):
            if attr in spec:
                result[attr] &= det is not None and getattr(det, attr) == spec[attr]
    result["count"] = len(found) == len(shapes)
    result["all"] = all(result.values())
    return result


def score(
    images: Any, expected: Sequence[Mapping[str, Any]] | Iterable[Mapping[str, Any]]
) -> dict[str, float]:
    """Accuracy of each attribute (and 'all') over a batch: the GenEval-like summary.

    images: uint8 (B, H, W, 3) array/tensor or a list of images; expected: one dict each.
    """
    batch = as_uint8_batch(images)
    exp = list(expected)
    if len(exp) != batch.shape[0]:
        raise TokredError(
            f"{batch.shape[0]} images but {len(exp)} expected dicts: give one per image"
        )
    totals: dict[str, list[int]] = {}
    for img, e in zip(batch, exp, strict=True):
        for attr, ok in check(img, e).items():
            totals.setdefault(attr, [0, 0])
            totals[attr][0] += int(ok)
            totals[attr][1] += 1
    return {attr: hit / n for attr, (hit, n) in totals.items()}
