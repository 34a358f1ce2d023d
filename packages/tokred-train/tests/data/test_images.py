"""Image batch conversion and resizing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from tokred_core import TokredError
from tokred_train.data import as_uint8_batch, as_uint8_image, square_resize


def test_batch_from_many_holders():
    arr = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    assert as_uint8_batch(arr) is arr
    assert np.array_equal(as_uint8_batch(torch.from_numpy(arr)), arr)
    assert np.array_equal(as_uint8_batch([Image.fromarray(a) for a in arr]), arr)
    assert np.array_equal(as_uint8_batch(arr[0]), arr[:1])
    rgba = Image.fromarray(arr[0]).convert("RGBA")
    assert as_uint8_image(rgba).shape == (8, 8, 3)


def test_batch_errors():
    with pytest.raises(TokredError, match="different sizes"):
        as_uint8_batch([np.zeros((8, 8, 3), np.uint8), np.zeros((4, 4, 3), np.uint8)])
    with pytest.raises(TokredError, match="empty"):
        as_uint8_batch([])
    with pytest.raises(TokredError, match="uint8"):
        as_uint8_batch(np.zeros((1, 4, 4, 3)))
    with pytest.raises(TokredError, match=r"\(H, W, 3\)"):
        as_uint8_image(np.zeros((4, 4), np.uint8))


def test_square_resize_crops_the_centre():
    img = np.zeros((10, 30, 3), np.uint8)
    img[:, 10:20] = 200  # the centre square
    out = square_resize(img, 10)
    assert out.shape == (10, 10, 3) and out.dtype == np.uint8
    assert (out == 200).all()
    assert square_resize(Image.fromarray(img), 5).shape == (5, 5, 3)
