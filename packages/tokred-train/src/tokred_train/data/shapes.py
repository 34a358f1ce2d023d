"""The embedded default data set: deterministic synthetic "shapes".

Why a synthetic set: tokred must train end to end with no network (DESIGN.md), so the
default run builds its own data. Every image is a plain background with one or more
coloured shapes, each centred in one cell of a 2x2 grid. The attribute space is tiny
(3 kinds x 4 colours x 4 positions x 2 sizes), so a few-million-parameter unified model
can learn both directions on CPU, and a deterministic detector (``detector.py``) can
score generated images the way GenEval scores real ones.

Each record holds the image (a ``datasets.Image`` feature, decoded to PIL), a caption
("a large red circle at the top left"), the structured attributes of every shape, and
understanding questions with one-word answers (kind, colour, position, count).
"""

from __future__ import annotations

from dataclasses import dataclass

import datasets
import numpy as np
from PIL import Image
from tokred_core import TokredError

__all__ = [
    "BACKGROUND",
    "PALETTE",
    "KINDS",
    "COLORS",
    "POSITIONS",
    "SIZES",
    "SIZE_RADIUS",
    "COUNT_WORDS",
    "ShapeSpec",
    "cell_center",
    "shape_radius",
    "draw_shapes",
    "caption_for",
    "questions_for",
    "shapes_features",
    "build_shapes_dataset",
]

#: Background colour: white keeps every palette colour far from it in RGB distance.
BACKGROUND: tuple[int, int, int] = (255, 255, 255)

#: Palette. Saturated and mutually distant, so colour survives lossy VQ reconstruction.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 60, 220),
    "yellow": (235, 195, 20),
}

KINDS: tuple[str, ...] = ("circle", "square", "triangle")
COLORS: tuple[str, ...] = tuple(PALETTE)
#: Grid cells, row-major. Captions spell them with a space ("top left").
POSITIONS: tuple[str, ...] = ("top-left", "top-right", "bottom-left", "bottom-right")
SIZES: tuple[str, ...] = ("small", "large")
#: Shape radius as a fraction of the grid cell's side (cell = image_size / 2).
#: Large shapes stay clear of the cell border, so shapes in different cells never touch.
SIZE_RADIUS: dict[str, float] = {"small": 0.25, "large": 0.4}
COUNT_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four")


@dataclass(frozen=True)
class ShapeSpec:
    """One shape in an image: what it is, its colour, its grid cell and its size."""

    kind: str
    color: str
    position: str
    size: str

    def as_dict(self) -> dict[str, str]:
        return {
            "kind": self.kind,
            "color": self.color,
            "position": self.position,
            "size": self.size,
        }


def cell_center(position: str, image_size: int) -> tuple[float, float]:
    """(x, y) pixel coordinates of the centre of a 2x2 grid cell (pixel centres at +0.5)."""
    if position not in POSITIONS:
        raise TokredError(f"unknown position {position!r}: expected one of {', '.join(POSITIONS)}")
    row, col = divmod(POSITIONS.index(position), 2)
    cell = image_size / 2
    return (col + 0.5) * cell, (row + 0.5) * cell


def shape_radius(size: str, image_size: int) -> float:
    """Radius in pixels of a shape of `size` (half its bounding-box side)."""
    if size not in SIZE_RADIUS:
        raise TokredError(f"unknown size {size!r}: expected one of {', '.join(SIZES)}")
    return SIZE_RADIUS[size] * image_size / 2


def _shape_mask(spec: ShapeSpec, image_size: int) -> np.ndarray:
    """(H, W) bool mask of one shape, sampled at pixel centres (hard edges, no anti-aliasing).

    Hard edges keep every pixel an exact palette or background colour, which makes the
    VQ codebook small and the detector exact on ground truth.
    """
    cx, cy = cell_center(spec.position, image_size)
    r = shape_radius(spec.size, image_size)
    ys, xs = np.mgrid[0:image_size, 0:image_size].astype(np.float64) + 0.5
    dx, dy = xs - cx, ys - cy
    if spec.kind == "circle":
        return dx * dx + dy * dy <= r * r
    if spec.kind == "square":
        return (np.abs(dx) <= r) & (np.abs(dy) <= r)
    if spec.kind == "triangle":
        # Upward isosceles triangle filling half of its 2r x 2r box: apex at the top centre.
        t = (dy + r) / (2 * r)  # 0 at the apex row, 1 at the base row
        return (t >= 0) & (t <= 1) & (np.abs(dx) <= r * t)
    raise TokredError(f"unknown shape kind {spec.kind!r}: expected one of {', '.join(KINDS)}")


def draw_shapes(
    shapes: list[ShapeSpec], image_size: int = 32, background: tuple[int, int, int] = BACKGROUND
) -> np.ndarray:
    """Render shapes onto a plain background: (H, W, 3) uint8."""
    if image_size < 8:
        raise TokredError(f"image_size {image_size} is too small to draw shapes; use 8 or more")
    img = np.empty((image_size, image_size, 3), dtype=np.uint8)
    img[:] = background
    for spec in shapes:
        if spec.color not in PALETTE:
            raise TokredError(f"unknown colour {spec.color!r}: expected one of {', '.join(COLORS)}")
        img[_shape_mask(spec, image_size)] = PALETTE[spec.color]
    return img


def _describe(spec: ShapeSpec) -> str:
    return f"a {spec.size} {spec.color} {spec.kind} at the {spec.position.replace('-', ' ')}"


def caption_for(shapes: list[ShapeSpec]) -> str:
    """The generation prompt / caption: 'a large red circle at the top left and a ...'."""
    return " and ".join(_describe(s) for s in shapes)


def questions_for(shapes: list[ShapeSpec]) -> list[dict[str, str]]:
    """Understanding questions with one-word answers.

    Questions name a shape by its cell (kind, colour) or by colour+kind (position); shapes
    in one image have distinct cells and distinct (colour, kind) pairs, so every question
    has exactly one answer.
    """
    out: list[dict[str, str]] = []
    for s in shapes:
        where = s.position.replace("-", " ")
        out.append({"question": f"what shape is at the {where}?", "answer": s.kind})
        out.append({"question": f"what colour is the shape at the {where}?", "answer": s.color})
        out.append({"question": f"where is the {s.color} {s.kind}?", "answer": s.position})
    out.append({"question": "how many shapes are there?", "answer": COUNT_WORDS[len(shapes)]})
    return out


def shapes_features() -> datasets.Features:
    """The `datasets` schema of a shapes split."""
    shape = {k: datasets.Value("string") for k in ("kind", "color", "position", "size")}
    qa = {"question": datasets.Value("string"), "answer": datasets.Value("string")}
    return datasets.Features(
        {
            "id": datasets.Value("string"),
            "image": datasets.Image(),
            "caption": datasets.Value("string"),
            "num_shapes": datasets.Value("int32"),
            "shapes": datasets.List(shape),
            "questions": datasets.List(qa),
        }
    )


def _sample_shapes(rng: np.random.Generator, max_shapes: int) -> list[ShapeSpec]:
    n = int(rng.integers(1, max_shapes + 1))
    cells = rng.permutation(len(POSITIONS))[:n]
    combos = rng.permutation(len(KINDS) * len(COLORS))[:n]  # distinct (kind, colour) pairs
    out = []
    for cell, combo in zip(cells, combos, strict=True):
        kind, color = divmod(int(combo), len(COLORS))
        size = SIZES[int(rng.integers(len(SIZES)))]
        out.append(ShapeSpec(KINDS[kind], COLORS[color], POSITIONS[int(cell)], size))
    return out


def _build_split(
    name: str, count: int, rng: np.random.Generator, image_size: int, max_shapes: int
) -> datasets.Dataset:
    cols: dict[str, list] = {k: [] for k in shapes_features()}
    for i in range(count):
        shapes = _sample_shapes(rng, max_shapes)
        cols["id"].append(f"{name}-{i:06d}")
        cols["image"].append(Image.fromarray(draw_shapes(shapes, image_size)))
        cols["caption"].append(caption_for(shapes))
        cols["num_shapes"].append(len(shapes))
        cols["shapes"].append([s.as_dict() for s in shapes])
        cols["questions"].append(questions_for(shapes))
    return datasets.Dataset.from_dict(cols, features=shapes_features(), split=name)


def build_shapes_dataset(
    num_train: int = 1000,
    num_val: int = 200,
    seed: int = 0,
    image_size: int = 32,
    max_shapes: int = 1,
) -> datasets.DatasetDict:
    """Build the shapes set: a DatasetDict with 'train' and 'validation' splits, in memory.

    Deterministic given the arguments. The two splits draw from independent random
    streams of one seed, so they differ sample by sample but share the attribute space
    (an in-distribution evaluation: with one shape per image there are only 96 distinct
    images, so the validation images also occur in train). Each image holds 1..max_shapes
    shapes in distinct cells; keep max_shapes=1 (the default) for the generation task of a
    tiny model.
    """
    if num_train < 0 or num_val < 0:
        raise TokredError(f"split sizes must be >= 0, got num_train={num_train}, num_val={num_val}")
    if not 1 <= max_shapes <= len(POSITIONS):
        raise TokredError(f"max_shapes {max_shapes} out of range: use 1..{len(POSITIONS)}")
    if image_size < 8 or image_size % 2:
        raise TokredError(f"image_size {image_size}: use an even size of at least 8 (e.g. 32)")
    train_ss, val_ss = np.random.SeedSequence(seed).spawn(2)
    return datasets.DatasetDict(
        {
            "train": _build_split(
                "train", num_train, np.random.default_rng(train_ss), image_size, max_shapes
            ),
            "validation": _build_split(
                "validation", num_val, np.random.default_rng(val_ss), image_size, max_shapes
            ),
        }
    )
