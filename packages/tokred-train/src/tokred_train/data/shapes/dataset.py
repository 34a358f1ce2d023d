"""The embedded default data set: deterministic synthetic "shapes".

Why a synthetic set: tokred must train end to end with no network (DESIGN.md), so the
default run builds its own data. Every image is a plain background with one or more
coloured shapes, each centred in one cell of a 2x2 grid. Each shape has a small attribute
space (3 kinds x 4 colours x 4 positions x 2 sizes), so a few-million-parameter unified
model can learn both directions on CPU, and a deterministic detector (``detector.py``)
can score generated images the way GenEval scores real ones.

Validation is held out by scene, not by draw: every scene (the set of (position, kind,
colour) triples of its shapes; size is ignored, so a validation scene is not merely a
resized training one) is assigned to one split by a seeded hash (`is_validation_scene`).
The training split never holds a scene of the validation split, so validation measures
generalisation to unseen attribute combinations rather than recall.

Each record holds the image (a ``datasets.Image`` feature, decoded to PIL), a caption
("a large red circle at the top left"), the structured attributes of every shape, and
understanding questions with one-word answers (kind, colour, position, count).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import datasets
import numpy as np
from PIL import Image
from tokred_core import TokredError

from .task_split import BOTH_TASKS, TaskSplit

__all__ = [
    "BACKGROUND",
    "PALETTE",
    "KINDS",
    "COLORS",
    "POSITIONS",
    "SIZES",
    "SIZE_RADIUS",
    "COUNT_WORDS",
    "DEFAULT_VAL_FRACTION",
    "ShapeSpec",
    "cell_center",
    "shape_radius",
    "draw_shapes",
    "caption_for",
    "questions_for",
    "shapes_features",
    "scene_key",
    "is_validation_scene",
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
#: Share of scenes (hash space) reserved for validation. With one shape per image there
#: are only 48 scenes, so about 10 of them are validation-only.
DEFAULT_VAL_FRACTION = 0.2
#: Draws without finding a scene of the wanted split before giving up (only a tiny scene
#: space with an unlucky seed can get there: e.g. none of the 48 one-shape scenes hashing
#: to validation).
_MAX_DRAWS = 10_000


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


def questions_for(
    shapes: list[ShapeSpec], about: list[ShapeSpec] | None = None
) -> list[dict[str, str]]:
    """Understanding questions with one-word answers.

    Questions name a shape by its cell (kind, colour) or by colour+kind (position); shapes
    in one image have distinct cells and distinct (colour, kind) pairs, so every question
    has exactly one answer. `about`: ask only about these of the shapes, and not the count
    (None: every shape, then the count).
    """
    out: list[dict[str, str]] = []
    for s in shapes if about is None else about:
        where = s.position.replace("-", " ")
        out.append({"question": f"what shape is at the {where}?", "answer": s.kind})
        out.append({"question": f"what colour is the shape at the {where}?", "answer": s.color})
        out.append({"question": f"where is the {s.color} {s.kind}?", "answer": s.position})
    if about is not None:
        return out
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
            "tasks": datasets.List(datasets.Value("string")),
        }
    )


def _field(shape: ShapeSpec | Mapping[str, str], name: str) -> str:
    return shape[name] if isinstance(shape, Mapping) else getattr(shape, name)


def scene_key(shapes: Sequence[ShapeSpec | Mapping[str, str]]) -> str:
    """Canonical name of a scene: its (position, colour, kind) triples in grid order.

    Order-free (the caption lists shapes in draw order, the image does not) and blind to
    size, so two images that differ only in shape sizes are the same scene.
    """
    triples = sorted(
        (POSITIONS.index(_field(s, "position")), _field(s, "color"), _field(s, "kind"))
        for s in shapes
    )
    return "|".join(f"{POSITIONS[p]}:{color}:{kind}" for p, color, kind in triples)


def _check_fraction(val_fraction: float) -> None:
    if not 0.0 < val_fraction < 1.0:
        raise TokredError(f"val_fraction {val_fraction} must be strictly between 0 and 1")


def is_validation_scene(
    shapes: Sequence[ShapeSpec | Mapping[str, str]],
    seed: int = 0,
    val_fraction: float = DEFAULT_VAL_FRACTION,
) -> bool:
    """Whether a scene belongs to the validation split of `seed` (else to training).

    A seeded hash of `scene_key` mapped to [0, 1): deterministic across processes and
    platforms (unlike Python's salted `hash`), independent of split sizes, and different
    for each seed.
    """
    _check_fraction(val_fraction)
    digest = hashlib.blake2b(f"{seed}/{scene_key(shapes)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64 < val_fraction


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


def _scene_tasks(
    shapes: list[ShapeSpec], validation: bool, task_split: TaskSplit | None
) -> tuple[str, ...]:
    """The tasks an image serves: both without a task split, else what the split allows
    (see task_split.py); () rejects the scene."""
    if task_split is None:
        return BOTH_TASKS
    return task_split.validation_tasks(shapes) if validation else task_split.train_tasks(shapes)


def _sample_split_scene(
    rng: np.random.Generator,
    max_shapes: int,
    validation: bool,
    seed: int,
    val_fraction: float,
    task_split: TaskSplit | None = None,
) -> tuple[list[ShapeSpec], tuple[str, ...]]:
    """Draw scenes until one belongs to the wanted split and serves a task there
    (rejection sampling keeps the within-split distribution the same as the unsplit one).
    Returns the scene and its tasks."""
    for _ in range(_MAX_DRAWS):
        shapes = _sample_shapes(rng, max_shapes)
        if is_validation_scene(shapes, seed, val_fraction) == validation:
            tasks = _scene_tasks(shapes, validation, task_split)
            if tasks:
                return shapes, tasks
    split = "validation" if validation else "train"
    raise TokredError(
        f"no scene of at most {max_shapes} shapes fell in the {split} split after {_MAX_DRAWS} "
        f"draws (seed {seed}, val_fraction {val_fraction}); use another seed or val_fraction"
    )


def _build_split(
    name: str,
    count: int,
    rng: np.random.Generator,
    image_size: int,
    max_shapes: int,
    seed: int,
    val_fraction: float,
    task_split: TaskSplit | None = None,
) -> datasets.Dataset:
    cols: dict[str, list] = {k: [] for k in shapes_features()}
    validation = name == "validation"
    for i in range(count):
        shapes, tasks = _sample_split_scene(
            rng, max_shapes, validation, seed, val_fraction, task_split
        )
        about = None
        if validation and task_split is not None:  # ask only what tests transfer
            about = [s for s in shapes if task_split.is_unseen("understanding", s)]
        cols["id"].append(f"{name}-{i:06d}")
        cols["image"].append(Image.fromarray(draw_shapes(shapes, image_size)))
        cols["caption"].append(caption_for(shapes))
        cols["num_shapes"].append(len(shapes))
        cols["shapes"].append([s.as_dict() for s in shapes])
        cols["questions"].append(questions_for(shapes, about))
        cols["tasks"].append(list(tasks))
    return datasets.Dataset.from_dict(cols, features=shapes_features(), split=name)


def build_shapes_dataset(
    num_train: int = 1000,
    num_val: int = 200,
    seed: int = 0,
    image_size: int = 32,
    max_shapes: int = 1,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    task_split: bool = False,
) -> datasets.DatasetDict:
    """Build the shapes set: a DatasetDict with 'train' and 'validation' splits, in memory.

    Deterministic given the arguments. Each image holds 1..max_shapes shapes (uniform) in
    distinct cells. The splits are held out by scene: `is_validation_scene(shapes, seed,
    val_fraction)` decides the split of every scene, so no validation scene (same shapes'
    kinds, colours and positions, whatever their sizes) ever occurs in train. Individual
    shapes do recur: with max_shapes >= 2, validation asks for unseen combinations of seen
    shapes. Each split draws from its own random stream of the seed, so the validation
    split does not depend on num_train (evaluation rebuilds it with num_train=0).

    task_split: hold (kind, position) combinations out of each task's training images and
    make validation ask only for them (task_split.py); each record's `tasks` names the
    tasks it serves (both, without a split).
    """
    if num_train < 0 or num_val < 0:
        raise TokredError(f"split sizes must be >= 0, got num_train={num_train}, num_val={num_val}")
    if not 1 <= max_shapes <= len(POSITIONS):
        raise TokredError(f"max_shapes {max_shapes} out of range: use 1..{len(POSITIONS)}")
    if image_size < 8 or image_size % 2:
        raise TokredError(f"image_size {image_size}: use an even size of at least 8 (e.g. 32)")
    _check_fraction(val_fraction)
    streams = dict(zip(("train", "validation"), np.random.SeedSequence(seed).spawn(2), strict=True))
    counts = {"train": num_train, "validation": num_val}
    split = TaskSplit(KINDS, POSITIONS, seed) if task_split else None
    return datasets.DatasetDict(
        {
            name: _build_split(
                name,
                counts[name],
                np.random.default_rng(stream),
                image_size,
                max_shapes,
                seed,
                val_fraction,
                split,
            )
            for name, stream in streams.items()
        }
    )
