"""The patch k-means VQ tokenizer: round trips, determinism, persistence, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tokred_core import TokredError
from tokred_train.data import PatchVQTokenizer, as_uint8_batch, build_shapes_dataset


@pytest.fixture(scope="module")
def images() -> tuple[np.ndarray, np.ndarray]:
    dd = build_shapes_dataset(num_train=120, num_val=40, seed=0)
    return as_uint8_batch(dd["train"]["image"]), as_uint8_batch(dd["validation"]["image"])


@pytest.fixture(scope="module")
def vq(images) -> PatchVQTokenizer:
    return PatchVQTokenizer.fit(images[0], codebook_size=64, patch_size=4, seed=0, iters=10)


def test_shapes_and_sizes(vq, images):
    assert vq.codebook_size == 64
    assert vq.num_tokens_per_image == 64 and vq.grid == (8, 8)
    codes = vq.encode(images[1][:5])
    assert codes.dtype == torch.long and codes.shape == (5, 64)
    assert int(codes.min()) >= 0 and int(codes.max()) < 64
    out = vq.decode(codes)
    assert out.dtype == torch.uint8 and out.shape == (5, 32, 32, 3)


def test_reconstruction_error_is_small(vq, images):
    train, val = images
    # Mean squared error on a 0..255 scale; a blank white guess would be far above 1000.
    blank = float(((train.astype(np.float32) - 255) ** 2).mean())
    assert vq.reconstruction_mse(train) < 0.1 * blank
    assert vq.reconstruction_mse(val) < 0.1 * blank


def test_lossless_when_codebook_covers_all_patches(images):
    train, _ = images
    vq = PatchVQTokenizer.fit(train, codebook_size=256, patch_size=4, seed=0)
    assert vq.reconstruction_mse(train) == 0.0


def test_decode_encode_is_idempotent(vq, images):
    once = vq.decode(vq.encode(images[1]))
    twice = vq.decode(vq.encode(once))
    assert torch.equal(once, twice)


def test_accepts_pil_lists_tensors_and_arrays(vq, images):
    from PIL import Image

    x = images[1][:3]
    ref = vq.encode(x)
    assert torch.equal(vq.encode([Image.fromarray(a) for a in x]), ref)
    assert torch.equal(vq.encode(torch.from_numpy(x)), ref)
    assert torch.equal(vq.encode(x[0]), ref[:1])  # one (H, W, 3) image


def test_fit_is_deterministic_given_seed(images):
    a = PatchVQTokenizer.fit(images[0], codebook_size=48, seed=7, iters=5)
    b = PatchVQTokenizer.fit(images[0], codebook_size=48, seed=7, iters=5)
    assert torch.equal(a.codebook, b.codebook)


def test_save_load_gives_identical_codes(vq, images, tmp_path):
    vq.save(tmp_path / "vq")
    assert not list((tmp_path / "vq").glob("*.tmp"))
    cfg = json.loads((tmp_path / "vq" / "vq_config.json").read_text())
    assert cfg["codebook_size"] == 64 and cfg["patch_size"] == 4 and cfg["image_size"] == [32, 32]
    loaded = PatchVQTokenizer.load(tmp_path / "vq")
    assert torch.equal(loaded.codebook, vq.codebook)
    assert torch.equal(loaded.encode(images[1]), vq.encode(images[1]))
    vq.save(tmp_path / "vq")  # overwriting is fine


def test_other_patch_sizes(images):
    vq = PatchVQTokenizer.fit(images[0][:20], codebook_size=32, patch_size=8, iters=3)
    assert vq.num_tokens_per_image == 16
    assert vq.decode(vq.encode(images[1][:2])).shape == (2, 32, 32, 3)


def test_errors(vq, images, tmp_path):
    with pytest.raises(TokredError, match="patch_size 5"):
        PatchVQTokenizer.fit(images[0][:2], codebook_size=8, patch_size=5)
    with pytest.raises(TokredError, match="codebook_size"):
        PatchVQTokenizer.fit(images[0][:2], codebook_size=0)
    with pytest.raises(TokredError, match="16x16"):
        vq.encode(np.zeros((1, 16, 16, 3), np.uint8))
    with pytest.raises(TokredError, match="uint8"):
        vq.encode(np.zeros((1, 32, 32, 3), np.float32))
    with pytest.raises(TokredError, match="outside"):
        vq.decode(torch.full((1, 64), 64))
    with pytest.raises(TokredError, match="expected"):
        vq.decode(torch.zeros(1, 10, dtype=torch.long))
    with pytest.raises(TokredError, match="missing"):
        PatchVQTokenizer.load(tmp_path / "nothing")


def test_a_damaged_saved_tokenizer_is_one_error_naming_the_file(vq, tmp_path):
    vq.save(tmp_path / "vq")
    (tmp_path / "vq" / "codebook.safetensors").write_bytes(bytes(range(256)))
    with pytest.raises(TokredError, match="codebook.safetensors is not a VQ codebook"):
        PatchVQTokenizer.load(tmp_path / "vq")
    vq.save(tmp_path / "vq")
    (tmp_path / "vq" / "vq_config.json").write_text('{"format": "tokred-patch-kmeans"}')
    with pytest.raises(TokredError, match="vq_config.json: a field is missing"):
        PatchVQTokenizer.load(tmp_path / "vq")
