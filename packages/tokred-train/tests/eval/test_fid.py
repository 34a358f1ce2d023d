"""FID: the Fréchet distance against closed forms and an independent symmetric-root
reference, real TorchScript extractors (with and without `return_features`), the error
cases, and FID in a real-format run's evaluation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from tokred_core import TokredError
from tokred_train.eval.fid import (
    FidReference,
    feature_stats,
    fid,
    frechet_distance,
    image_features,
    load_feature_extractor,
)
from tokred_train.testing import save_tiny_feature_extractor

# The test's own scripted networks: torch marks torch.jit deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")


def _symmetric_sqrt(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(m)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def _reference_fid(mu1, s1, mu2, s2) -> float:
    """FID computed another way: tr sqrt(S1 S2) = tr (S1^1/2 S2 S1^1/2)^1/2, both
    symmetric roots by eigh."""
    root = _symmetric_sqrt(s1)
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh(root @ s2 @ root), 0.0, None)).sum()
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)


def _random_cov(rng, d: int, n: int) -> np.ndarray:
    """The sample covariance of n random points in d dimensions (singular when n <= d)."""
    x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d))
    return np.atleast_2d(np.cov(x, rowvar=False))


def test_diagonal_covariances_give_the_closed_form():
    rng = np.random.default_rng(0)
    d = 7
    m1, m2 = rng.normal(size=d), rng.normal(size=d)
    a, b = rng.uniform(0.1, 3.0, d), rng.uniform(0.1, 3.0, d)
    expected = np.sum((m1 - m2) ** 2) + np.sum(a + b - 2 * np.sqrt(a * b))
    assert frechet_distance(m1, np.diag(a), m2, np.diag(b)) == pytest.approx(expected, rel=1e-10)
    # One dimension: (m1 - m2)^2 + (sqrt(a) - sqrt(b))^2, scalars accepted.
    assert frechet_distance(1.0, 4.0, 3.0, 9.0) == pytest.approx(4.0 + 1.0, rel=1e-12)


@pytest.mark.parametrize("d, n", [(1, 5), (5, 40), (13, 60), (9, 4), (31, 7)])
def test_full_covariances_match_the_symmetric_root_reference(d, n):
    rng = np.random.default_rng(d * 100 + n)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = _random_cov(rng, d, n), _random_cov(rng, d, n + 3)
    got = frechet_distance(mu1, s1, mu2, s2)
    want = _reference_fid(mu1, s1, mu2, s2)
    scale = np.trace(s1) + np.trace(s2)
    assert abs(got - want) <= 1e-7 * scale, (got, want)
    assert got >= -1e-7 * scale  # a distance, up to rounding


def test_identical_statistics_are_at_distance_zero_even_when_singular():
    rng = np.random.default_rng(1)
    for d, n in ((6, 50), (40, 10)):  # D > N: rank-deficient covariances
        s = _random_cov(rng, d, n)
        mu = rng.normal(size=d)
        assert abs(frechet_distance(mu, s, mu, s)) <= 1e-6 * np.trace(s)


def test_bad_statistics_are_one_line():
    with pytest.raises(TokredError, match=r"need two \(D,\) means"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))
    with pytest.raises(TokredError, match="at least 2 generated images, got 1"):
        feature_stats(np.zeros((1, 4)), "generated images")


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(2)
    return rng.integers(0, 200, (12, 16, 16, 3), dtype=np.uint8)


@pytest.mark.parametrize("return_features", [True, False])
def test_torchscript_extractors_with_and_without_return_features(tmp_path, images, return_features):
    path = save_tiny_feature_extractor(tmp_path / "net.pt", return_features=return_features)
    extractor = load_feature_extractor(path)
    assert extractor.return_features is return_features and extractor.path == path
    feats = image_features(extractor, images, batch_size=5)  # batches of 5, 5 and 2
    assert feats.shape == (12, 8) and feats.dtype == np.float64  # pool features, not logits
    # The layouts decoders and data sets give: a tensor, a list of PIL images.
    assert np.allclose(image_features(extractor, torch.from_numpy(images)), feats)
    pil = [Image.fromarray(im) for im in images]
    assert np.allclose(image_features(extractor, pil), feats)
    assert abs(fid(extractor, images, images)) < 1e-6
    brighter = np.clip(images.astype(int) + 50, 0, 255).astype(np.uint8)
    assert fid(extractor, brighter, images) > 1e-3
    reference = FidReference.of(extractor, images, "the test's images")
    assert reference.score(brighter) == {
        "fid": pytest.approx(fid(extractor, brighter, images)),
        "fid_images": 12,
        "fid_weights": str(path),
        "fid_reference": "the test's images",
    }


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_files_that_are_not_a_torchscript_extractor_are_one_line(tmp_path):
    (tmp_path / "notes.txt").write_text("not a network")
    torch.save(torch.nn.Conv2d(3, 4, 3).state_dict(), tmp_path / "state.pt")
    (tmp_path / "folder").mkdir()
    cases = {
        tmp_path / "absent.pt": "not found",
        tmp_path / "folder": "is not a file",
        tmp_path / "notes.txt": "is not a TorchScript feature extractor",
        tmp_path / "state.pt": "is not a TorchScript feature extractor",
    }
    for path, what in cases.items():
        with pytest.raises(TokredError) as exc:
            load_feature_extractor(path)
        message = _one_line(exc)
        assert f"FID weights {path} {what}" in message, message
        assert "inception-2015-12-05.pt" in message


def test_a_network_that_cannot_read_the_images_is_one_line(tmp_path, images):
    class GrayOnly(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x).mean(dim=(2, 3))

    torch.jit.script(GrayOnly()).save(str(tmp_path / "gray.pt"))
    extractor = load_feature_extractor(tmp_path / "gray.pt")
    with pytest.raises(TokredError) as exc:
        image_features(extractor, images)
    assert f"FID weights {tmp_path / 'gray.pt'}: the network failed on a (12, 3, 16, 16)" in (
        _one_line(exc)
    )
    with pytest.raises(TokredError, match="at least 2 reference images, got 1"):
        fid(
            load_feature_extractor(save_tiny_feature_extractor(tmp_path / "n.pt")),
            images,
            images[:1],
        )


def test_real_format_runs_are_scored_against_their_vq_reconstructions(tmp_path, real_data):
    """Real data keeps only codes of its validation images: eval.json's FID is against
    their VQ reconstructions, and an extractor that cannot read them fails before any
    decoding or writing."""
    from tokred_train import load_config, train
    from tokred_train.eval.run import evaluate_run, run_from_result

    overrides = [
        "data.kind=jsonl",
        f"data.paths=[{real_data / 'gen.jsonl'}]",
        f"data.image_root={real_data / 'img'}",
        "data.understanding_ratio=0",
        "data.num_val=3",
        "data.image_size=16",
        "data.codebook_size=8",
        "model.hidden_size=32",
        "model.intermediate_size=64",
        "model.num_layers=2",
        "optim.batch_size=2",
        "optim.max_steps=1",
        f"run.out_dir={tmp_path / 'run'}",
        "run.progress=false",
        "run.tensorboard=false",
        "run.threads=1",
    ]
    run = run_from_result(train(load_config(None, overrides)))
    extractor = load_feature_extractor(save_tiny_feature_extractor(tmp_path / "net.pt"))
    out = evaluate_run(run, tmp_path / "ev", num_understanding=0, num_generation=3, fid=extractor)
    g = json.loads((tmp_path / "ev" / "eval.json").read_text())["generation"]
    assert g == out["generation"]
    assert g["scored"] is False and g["fid_images"] == 3 and math.isfinite(g["fid"])
    assert g["fid_reference"] == "VQ reconstructions of the validation images"
    assert g["fid_weights"] == str(tmp_path / "net.pt")

    torch.jit.script(torch.nn.Conv2d(1, 2, 3)).save(str(tmp_path / "gray.pt"))
    with pytest.raises(TokredError, match="the network failed"):
        evaluate_run(
            run,
            tmp_path / "ev2",
            num_understanding=0,
            fid=load_feature_extractor(tmp_path / "gray.pt"),
        )
    assert not (tmp_path / "ev2").exists()
