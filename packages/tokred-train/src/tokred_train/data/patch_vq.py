"""A patch k-means VQ image tokenizer, trained locally on the data.

Why: the embedded unified model needs discrete image tokens in its vocabulary (VILA-U and
its family use a learned VQ tokenizer) but nothing can be downloaded. On the shapes set a
k-means codebook over non-overlapping pixel patches is enough: each p x p patch becomes
the index of its nearest codebook entry, an image of H x W pixels becomes
(H/p) * (W/p) tokens in raster order, and decoding pastes the codebook patches back.

Design choices:
- k-means runs on the *distinct* patches weighted by their counts (synthetic images
  repeat the background patch thousands of times), with k-means++ seeding from a seeded
  torch.Generator, so the fit is fast and deterministic.
- The fitted codebook is rounded to uint8. Distances are then computed on integer-valued
  float32 (exact below 2**24), so decode(encode(decode(c))) == decode(c) holds exactly
  and a saved/loaded tokenizer gives identical codes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tokred_core import TokredError

from ..atomic import atomic_write, atomic_write_text
from .codes import check_code_rows
from .images import ImagesLike, as_uint8_batch

__all__ = ["PatchVQTokenizer", "CODEBOOK_FILE", "CONFIG_FILE"]

CODEBOOK_FILE = "codebook.safetensors"
CONFIG_FILE = "vq_config.json"
_FORMAT = "tokred-patch-kmeans"
_CHUNK = 32768  # patches per distance block: bounds memory at CHUNK x codebook_size floats


def _nearest(x: torch.Tensor, centers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of and squared distance to the nearest centre, for each row of x (chunked)."""
    c2 = (centers * centers).sum(1)
    idx, dist = [], []
    for start in range(0, x.shape[0], _CHUNK):
        xb = x[start : start + _CHUNK]
        d = (xb * xb).sum(1, keepdim=True) - 2 * xb @ centers.T + c2
        m = d.min(1)
        idx.append(m.indices)
        dist.append(m.values.clamp_min(0))
    return torch.cat(idx), torch.cat(dist)


def _kmeans(
    points: torch.Tensor, weights: torch.Tensor, k: int, iters: int, gen: torch.Generator
) -> torch.Tensor:
    """Weighted k-means with k-means++ seeding. points (U, D) float, weights (U,) float."""
    first = torch.multinomial(weights, 1, generator=gen)
    centers = [points[first[0]]]
    d2 = ((points - centers[0]) ** 2).sum(1)
    for _ in range(1, k):
        p = weights * d2
        if float(p.sum()) <= 0:  # every point already is a centre
            break
        nxt = torch.multinomial(p, 1, generator=gen)[0]
        centers.append(points[nxt])
        d2 = torch.minimum(d2, ((points - points[nxt]) ** 2).sum(1))
    c = torch.stack(centers)
    assign = None
    for _ in range(iters):
        new_assign, dist = _nearest(points, c)
        if assign is not None and torch.equal(new_assign, assign):
            break
        assign = new_assign
        sums = torch.zeros_like(c).index_add_(0, assign, points * weights[:, None])
        mass = torch.zeros(c.shape[0], dtype=points.dtype).index_add_(0, assign, weights)
        empty = mass <= 0
        c = torch.where(empty[:, None], c, sums / mass.clamp_min(1e-12)[:, None])
        if bool(empty.any()):
            # Re-seed empty clusters on the worst-served points, deterministically.
            worst = torch.argsort(weights * dist, descending=True)[: int(empty.sum())]
            c[empty] = points[worst]
    return c


class PatchVQTokenizer:
    """Image <-> tokens through a codebook of p x p RGB patches.

    Build with `PatchVQTokenizer.fit(...)` or `PatchVQTokenizer.load(dir)`.
    """

    def __init__(self, codebook: torch.Tensor, patch_size: int, image_size: tuple[int, int]):
        if codebook.dtype != torch.uint8 or codebook.dim() != 2:
            raise TokredError(
                f"codebook must be a 2-D uint8 tensor, got {codebook.dtype} {tuple(codebook.shape)}"
            )
        if codebook.shape[1] != patch_size * patch_size * 3:
            raise TokredError(
                f"codebook rows have {codebook.shape[1]} values; patch_size {patch_size} needs "
                f"{patch_size * patch_size * 3}"
            )
        h, w = image_size
        if h % patch_size or w % patch_size:
            raise TokredError(f"image size {h}x{w} is not a multiple of patch_size {patch_size}")
        self.codebook = codebook.contiguous()
        self.patch_size = int(patch_size)
        self.image_size = (int(h), int(w))
        self._centers = self.codebook.float()

    # ---- sizes ----------------------------------------------------------------------------
    @property
    def codebook_size(self) -> int:
        """Number of codes (image token ids are 0..codebook_size-1)."""
        return self.codebook.shape[0]

    @property
    def grid(self) -> tuple[int, int]:
        """(rows, cols) of patches per image."""
        return self.image_size[0] // self.patch_size, self.image_size[1] // self.patch_size

    @property
    def num_tokens_per_image(self) -> int:
        rows, cols = self.grid
        return rows * cols

    # ---- patches ----------------------------------------------------------------------------
    def _patchify(self, images: np.ndarray) -> torch.Tensor:
        """(B, H, W, 3) uint8 -> (B, T, p*p*3) uint8, patches in raster order."""
        b, h, w, _ = images.shape
        p = self.patch_size
        x = torch.from_numpy(np.ascontiguousarray(images))
        x = x.view(b, h // p, p, w // p, p, 3).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(b, (h // p) * (w // p), p * p * 3)

    def _unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        b = patches.shape[0]
        (rows, cols), p = self.grid, self.patch_size
        x = patches.view(b, rows, cols, p, p, 3).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(b, rows * p, cols * p, 3)

    # ---- fit ----------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        images: ImagesLike,
        codebook_size: int = 128,
        patch_size: int = 4,
        seed: int = 0,
        iters: int = 20,
    ) -> PatchVQTokenizer:
        """Fit the codebook by k-means over all non-overlapping patches of `images`.

        images: uint8 (B, H, W, 3) array/tensor or a list of PIL images / arrays of one size.
        If the data holds no more distinct patches than `codebook_size`, the codebook is
        exactly those patches (lossless); unused rows repeat the last one.
        """
        if codebook_size < 1:
            raise TokredError(f"codebook_size {codebook_size}: need at least 1")
        if patch_size < 1:
            raise TokredError(f"patch_size {patch_size}: need at least 1")
        if iters < 0:
            raise TokredError(f"iters {iters}: need 0 or more")
        arr = as_uint8_batch(images)
        h, w = arr.shape[1:3]
        if h % patch_size or w % patch_size:
            raise TokredError(
                f"image size {h}x{w} is not a multiple of patch_size {patch_size}; "
                "pick a patch size that divides both sides"
            )
        d = patch_size * patch_size * 3
        shell = cls(torch.zeros(1, d, dtype=torch.uint8), patch_size, (h, w))
        flat = shell._patchify(arr).reshape(-1, d)
        uniq, counts = torch.unique(flat, dim=0, return_counts=True)
        if uniq.shape[0] <= codebook_size:
            codebook = uniq
        else:
            gen = torch.Generator().manual_seed(int(seed))
            centers = _kmeans(uniq.float(), counts.float(), codebook_size, iters, gen)
            codebook = centers.round().clamp(0, 255).to(torch.uint8)
        if codebook.shape[0] < codebook_size:
            pad = codebook[-1:].expand(codebook_size - codebook.shape[0], d)
            codebook = torch.cat([codebook, pad])
        return cls(codebook, patch_size, (h, w))

    # ---- encode / decode ------------------------------------------------------------------
    def encode(self, images: ImagesLike) -> torch.Tensor:
        """Images -> (B, num_tokens_per_image) long codes, raster order over the patch grid."""
        arr = as_uint8_batch(images)
        if tuple(arr.shape[1:3]) != self.image_size:
            raise TokredError(
                f"images are {arr.shape[1]}x{arr.shape[2]} but this tokenizer was fitted on "
                f"{self.image_size[0]}x{self.image_size[1]}; resize them first"
            )
        patches = self._patchify(arr)
        b, t, d = patches.shape
        idx, _ = _nearest(patches.reshape(-1, d).float(), self._centers)
        return idx.view(b, t)

    def decode(self, codes: torch.Tensor | np.ndarray) -> torch.Tensor:
        """(B, T) or (T,) codes -> (B, H, W, 3) uint8 images."""
        codes = check_code_rows(
            torch.as_tensor(codes, dtype=torch.long), self.num_tokens_per_image, self.codebook_size
        )
        return self._unpatchify(self.codebook[codes])

    def reconstruction_mse(self, images: ImagesLike) -> float:
        """Mean squared pixel error (0..255 scale) of decode(encode(images))."""
        arr = as_uint8_batch(images)
        rec = self.decode(self.encode(arr))
        return float(((rec.float() - torch.from_numpy(arr).float()) ** 2).mean())

    # ---- persistence ----------------------------------------------------------------------
    def config(self) -> dict:
        return {
            "format": _FORMAT,
            "version": 1,
            "codebook_size": self.codebook_size,
            "patch_size": self.patch_size,
            "image_size": list(self.image_size),
        }

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the codebook (safetensors) and its config (JSON), each atomically.

        The config is written last, so a folder with a config always has its codebook.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write(
            directory / CODEBOOK_FILE, lambda tmp: save_file({"codebook": self.codebook}, tmp)
        )
        atomic_write_text(directory / CONFIG_FILE, json.dumps(self.config(), indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> PatchVQTokenizer:
        """Read a tokenizer written by `save`."""
        directory = Path(directory)
        cfg_path, cb_path = directory / CONFIG_FILE, directory / CODEBOOK_FILE
        for p in (cfg_path, cb_path):
            if not p.is_file():
                raise TokredError(
                    f"no VQ tokenizer at {directory}: {p.name} is missing (run fit and save first)"
                )
        try:
            cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise TokredError(f"{cfg_path} is not valid JSON: {e}") from e
        if not isinstance(cfg, dict) or cfg.get("format") != _FORMAT:
            got = cfg.get("format") if isinstance(cfg, dict) else type(cfg).__name__
            raise TokredError(f"{cfg_path} has format {got!r}, expected {_FORMAT!r}")
        codebook = _read_codebook(cb_path)
        try:
            size, patch, image = cfg["codebook_size"], int(cfg["patch_size"]), cfg["image_size"]
            image_size = (int(image[0]), int(image[1]))
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise TokredError(f"{cfg_path}: a field is missing or malformed ({e!r})") from None
        if codebook.shape[0] != size:
            raise TokredError(
                f"{cb_path} holds {codebook.shape[0]} codes but {cfg_path} says {size}"
            )
        return cls(codebook, patch, image_size)

    def __repr__(self) -> str:
        return (
            f"PatchVQTokenizer(codebook_size={self.codebook_size}, patch_size={self.patch_size}, "
            f"image_size={self.image_size}, tokens_per_image={self.num_tokens_per_image})"
        )


def _read_codebook(path: Path) -> torch.Tensor:
    """The `codebook` tensor of a saved tokenizer; a damaged file is one line naming it."""
    try:
        codebook = load_file(str(path))["codebook"]
    except (SafetensorError, OSError, KeyError) as e:
        what = " ".join(str(e).split())[:200]
        raise TokredError(f"{path} is not a VQ codebook ({type(e).__name__}: {what})") from None
    if codebook.dim() != 2:
        raise TokredError(f"{path}: the codebook is {tuple(codebook.shape)}, expected 2-D")
    return codebook
