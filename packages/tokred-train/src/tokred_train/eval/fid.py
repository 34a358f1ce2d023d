"""Fréchet Inception Distance (FID) of generated images against reference images, from
a feature-extractor network the user has on disk.

The extractor is a TorchScript file, the format of the standard FID network
`inception-2015-12-05.pt` that clean-fid and StyleGAN2-ADA use: it takes float images
(N, 3, H, W) with values 0..255, resizes them itself, and returns its 2048-d pool features
when called with `return_features=True`. Nothing is downloaded: FID is computed only when
the user gives such a file.

FID fits a Gaussian to each set's features and measures the Fréchet (2-Wasserstein)
distance between the two: ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^1/2). Lower is
better; 0 means the feature statistics match. It is biased upward at small sample sizes,
so only FIDs over the same number of images compare.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokred_core import TokredError

from ..data.images import ImagesLike, as_uint8_batch

__all__ = [
    "FeatureExtractor",
    "FidReference",
    "feature_stats",
    "fid",
    "frechet_distance",
    "image_features",
    "load_feature_extractor",
]

_EXPECTED = (
    "a TorchScript feature extractor such as the standard FID network inception-2015-12-05.pt"
)


@dataclass(frozen=True)
class FeatureExtractor:
    """A loaded feature-extractor network and where it came from."""

    module: torch.jit.ScriptModule
    path: Path
    return_features: bool
    """Whether its forward takes `return_features` (the FID Inception does: without it,
    it returns class logits instead of pool features)."""


def load_feature_extractor(path: str | Path) -> FeatureExtractor:
    """Load a TorchScript feature extractor onto the CPU; a missing file, a folder or a
    file that is not TorchScript is one TokredError naming the path."""
    path = Path(path).expanduser()
    if not path.exists():
        raise TokredError(f"FID weights {path} not found: expected {_EXPECTED}")
    if not path.is_file():
        raise TokredError(f"FID weights {path} is not a file: expected {_EXPECTED}")
    try:
        with warnings.catch_warnings():
            # torch marks torch.jit as deprecated; the FID network is published only as
            # TorchScript, so the warning is nothing the user can act on.
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(str(path), map_location="cpu")
        arguments = [a.name for a in module.forward.schema.arguments]
    except Exception as exc:  # any failure to read the user's file is the file's fault
        reason = " ".join(str(exc).split())[:160]
        raise TokredError(
            f"FID weights {path} is not {_EXPECTED} ({type(exc).__name__}: {reason})"
        ) from None
    module.eval()
    return FeatureExtractor(module, path, "return_features" in arguments)


def image_features(
    extractor: FeatureExtractor,
    images: ImagesLike,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Features of uint8 (N, H, W, 3) images (array, tensor or a list of PIL/arrays, as
    the VQ decoders and the data sets give them): float64 (N, D)."""
    if batch_size < 1:
        raise TokredError(f"batch_size={batch_size}: need at least 1")
    pixels = as_uint8_batch(images)
    module = extractor.module.to(device)
    rows = []
    with torch.no_grad():
        for start in range(0, len(pixels), batch_size):
            chunk = torch.from_numpy(np.ascontiguousarray(pixels[start : start + batch_size]))
            batch = chunk.permute(0, 3, 1, 2).to(device, torch.float32)  # 0..255, NCHW
            rows.append(_forward(extractor, module, batch))
    return np.concatenate(rows) if rows else np.zeros((0, 0))


def _forward(extractor: FeatureExtractor, module: torch.nn.Module, batch: torch.Tensor):
    """(n, D) float64 features of one batch; a failure of the network is one line."""
    shape = tuple(batch.shape)
    try:
        out = module(batch, return_features=True) if extractor.return_features else module(batch)
    except Exception as exc:  # TorchScript raises its own error types with long traces
        reason = " ".join(str(exc).split())[:160]
        raise TokredError(
            f"FID weights {extractor.path}: the network failed on a {shape} batch of 0..255 "
            f"floats ({type(exc).__name__}: {reason})"
        ) from None
    if not isinstance(out, torch.Tensor) or out.dim() < 1 or out.shape[0] != shape[0]:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise TokredError(
            f"FID weights {extractor.path}: expected one feature row per image of a {shape} "
            f"batch, got {got}"
        )
    return out.reshape(shape[0], -1).detach().to("cpu", torch.float64).numpy()


def feature_stats(features: np.ndarray, what: str = "images") -> tuple[np.ndarray, np.ndarray]:
    """(mean, covariance) of (N, D) features; `what` names the set in the error."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise TokredError(f"FID needs at least 2 {what}, got {len(features)}: score more prompts")
    # atleast_2d: np.cov of a single feature column is a 0-d array.
    return features.mean(axis=0), np.atleast_2d(np.cov(features, rowvar=False))


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr sqrt(S1 S2), in float64, without scipy.

    Why the eigenvalues: S1 = A A with A = S1^1/2 symmetric PSD, so S1 S2 = A (A S2) and
    A (A S2) has the same eigenvalues as (A S2) A = A S2 A, which is symmetric PSD: they
    are real and >= 0. The principal square root of S1 S2 has the square roots of those
    eigenvalues as its own, so tr sqrt(S1 S2) is their sum. Rounding leaves tiny
    imaginary parts and tiny negatives, hence the real part clamped at 0.
    """
    mu1, mu2 = (
        np.atleast_1d(np.asarray(mu1, np.float64)),
        np.atleast_1d(np.asarray(mu2, np.float64)),
    )
    s1, s2 = (
        np.atleast_2d(np.asarray(sigma1, np.float64)),
        np.atleast_2d(np.asarray(sigma2, np.float64)),
    )
    d = mu1.shape[0]
    if mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise TokredError(
            f"FID of means {mu1.shape}, {mu2.shape} and covariances {s1.shape}, {s2.shape}: "
            "need two (D,) means and two (D, D) covariances"
        )
    eigenvalues = np.linalg.eigvals(s1 @ s2)
    tr_sqrt = float(np.sqrt(np.clip(eigenvalues.real, 0.0, None)).sum())
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_sqrt)


@dataclass(frozen=True)
class FidReference:
    """The reference images' feature statistics, measured once, against which generated
    images are scored."""

    extractor: FeatureExtractor
    mean: np.ndarray
    cov: np.ndarray
    what: str
    """What the reference images are, as eval.json says it."""
    batch_size: int = 64
    device: str | torch.device = "cpu"

    @classmethod
    def of(
        cls,
        extractor: FeatureExtractor,
        images: ImagesLike,
        what: str = "reference images",
        batch_size: int = 64,
        device: str | torch.device = "cpu",
    ) -> FidReference:
        features = image_features(extractor, images, batch_size, device)
        return cls(
            extractor, *feature_stats(features, "reference images"), what, batch_size, device
        )

    def fid(self, generated_images: ImagesLike) -> tuple[float, int]:
        """(FID of the generated images against this reference, how many were scored)."""
        features = image_features(self.extractor, generated_images, self.batch_size, self.device)
        mean, cov = feature_stats(features, "generated images")
        return frechet_distance(mean, cov, self.mean, self.cov), len(features)

    def score(self, generated_images: ImagesLike) -> dict[str, Any]:
        """The FID entries of eval.json's generation section."""
        value, count = self.fid(generated_images)
        return {
            "fid": value,
            "fid_images": count,
            "fid_weights": str(self.extractor.path),
            "fid_reference": self.what,
        }


def fid(
    extractor: FeatureExtractor,
    generated_images: ImagesLike,
    reference_images: ImagesLike,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> float:
    """FID of the generated images against the reference images (lower is better)."""
    reference = FidReference.of(extractor, reference_images, batch_size=batch_size, device=device)
    return reference.fid(generated_images)[0]
