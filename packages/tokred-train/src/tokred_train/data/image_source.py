"""Images of a real data set, decoded on demand rather than held in memory.

Why: LLaVA-665k at 384 px is about 300 GB of pixels. Images are read from their files
(the `datasets.Image` column holds paths and decodes lazily) in chunks when they are
encoded to codes before training, and, for a model that reads understanding images as
pixels through its own encoder (Janus's SigLIP), again per batch; only the codes and
the references stay in memory.
"""

from __future__ import annotations

from collections.abc import Sequence

import datasets
import numpy as np
import torch

from .images import square_resize
from .pixels import PixelSpec

__all__ = ["ImageSource", "LazyPixels"]


class ImageSource:
    """Row i of a set of loaded datasets (concatenated) -> its image, resized square."""

    def __init__(self, image_size: int):
        self.image_size = int(image_size)
        self._sets: list[datasets.Dataset] = []
        self._refs: list[tuple[int, int]] = []

    def add(self, dataset: datasets.Dataset) -> None:
        source = len(self._sets)
        self._sets.append(dataset)
        self._refs.extend((source, row) for row in range(len(dataset)))

    def __len__(self) -> int:
        return len(self._refs)

    def image(self, index: int) -> np.ndarray:
        """uint8 (image_size, image_size, 3): centre-cropped and resized."""
        source, row = self._refs[index]
        return square_resize(self._sets[source][row]["image"], self.image_size)

    def images(self, indices: Sequence[int]) -> np.ndarray:
        return np.stack([self.image(int(i)) for i in indices])


class LazyPixels:
    """The fitted uint8 pixels of chosen rows of an ImageSource, loaded when taken."""

    def __init__(self, source: ImageSource, rows: Sequence[int], spec: PixelSpec):
        self.source, self.rows, self.spec = source, [int(r) for r in rows], spec

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, indices: Sequence[int]) -> torch.Tensor:
        """(len(indices), H, W, 3) uint8."""
        fitted = [self.spec.fit_image(self.source.image(self.rows[int(i)])) for i in indices]
        if not fitted:
            return torch.zeros((0, self.spec.height, self.spec.width, 3), dtype=torch.uint8)
        return torch.from_numpy(np.stack(fitted))
