"""Pixel pre/post-processing of the HF image tokenizers against the transformers processors.

The processors are instantiated from their default arguments (no download), at small
sizes, with the released checkpoints' mean/std where those differ from the class
defaults (Emu3 and Janus use 0.5 / 0.5; Chameleon's defaults are its checkpoint's).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from tokred_core import TokredError
from tokred_train.data import PixelSpec
from tokred_train.families.chameleon import chameleon_pixel_spec
from tokred_train.families.emu3 import emu3_pixel_spec
from tokred_train.families.janus import janus_pixel_spec

HALF = [0.5, 0.5, 0.5]


def _image(h: int, w: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _ours(spec: PixelSpec, images: list[Image.Image]) -> torch.Tensor:
    return spec.normalize(np.stack([spec.fit_image(im) for im in images]))


@pytest.mark.parametrize("hw", [(40, 60), (60, 40), (32, 32), (17, 90)])
def test_chameleon_matches_its_image_processor(hw):
    from transformers import ChameleonImageProcessorPil

    proc = ChameleonImageProcessorPil(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    im = _image(*hw)
    ref = proc(images=[im], return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(_ours(chameleon_pixel_spec(32), [im]), ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("hw", [(40, 60), (60, 40), (32, 32), (4, 90)])
def test_janus_matches_its_image_processor(hw):
    from transformers import JanusImageProcessorPil

    proc = JanusImageProcessorPil(
        size={"height": 32, "width": 32}, image_mean=HALF, image_std=HALF, min_size=14
    )
    im = _image(*hw)
    ref = proc(images=[im], return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(_ours(janus_pixel_spec(32), [im]), ref, atol=1e-5, rtol=0)


def test_emu3_matches_its_image_processor_at_the_model_size():
    from transformers import Emu3ImageProcessor

    # Emu3's processor picks each image's own size; at a size it keeps, values must match.
    proc = Emu3ImageProcessor(image_mean=HALF, image_std=HALF, min_pixels=32 * 48, max_pixels=4096)
    im = _image(32, 48)
    ref = proc(images=[im], return_tensors="pt")["pixel_values"]
    assert ref.shape == (1, 3, 32, 48)
    torch.testing.assert_close(_ours(emu3_pixel_spec(32, 48), [im]), ref, atol=1e-5, rtol=0)


def test_postprocess_matches_processors_within_one_level():
    from transformers import Emu3ImageProcessor, JanusImageProcessorPil

    x = torch.rand(2, 3, 8, 8) * 2.2 - 1.1  # decoder output, a little outside [-1, 1]
    for proc, spec in (
        (JanusImageProcessorPil(image_mean=HALF, image_std=HALF), janus_pixel_spec(8)),
        (Emu3ImageProcessor(image_mean=HALF, image_std=HALF), emu3_pixel_spec(8, 8)),
    ):
        # One image at a time: Emu3's postprocess flattens a batch array into 2-D images.
        ref = [proc.postprocess(im.numpy(), return_tensors="np")["pixel_values"] for im in x]
        ref = torch.from_numpy(np.stack(ref).reshape(2, 3, 8, 8)).permute(0, 2, 3, 1).int()
        ours = spec.denormalize(x)
        assert ours.dtype == torch.uint8 and ours.shape == (2, 8, 8, 3)
        # The processors truncate; we round.
        assert int((ours.int() - ref).abs().max()) <= 1


def test_uint8_round_trip_through_normalisation_is_exact():
    batch = np.arange(256, dtype=np.uint8).repeat(3).reshape(1, 16, 16, 3)
    for spec in (janus_pixel_spec(16), emu3_pixel_spec(16, 16)):
        assert torch.equal(spec.denormalize(spec.normalize(batch)), torch.from_numpy(batch))


def test_fit_geometry():
    spec = emu3_pixel_spec(32, 48)
    exact = np.asarray(_image(32, 48))
    assert np.array_equal(spec.fit_image(exact), exact)  # right size: untouched
    for hw in [(10, 200), (200, 10), (64, 96)]:
        assert spec.fit_image(_image(*hw)).shape == (32, 48, 3)
    # Janus pads with int(mean * 255) = 127 around a wide image.
    wide = Image.new("RGB", (64, 16), (255, 0, 0))
    out = janus_pixel_spec(32).fit_image(wide)
    assert out.shape == (32, 32, 3)
    assert tuple(out[0, 0]) == (127, 127, 127) and tuple(out[16, 16]) == (255, 0, 0)


def test_processor_constants_override():
    from transformers import JanusImageProcessorPil

    spec = janus_pixel_spec(32).with_processor(JanusImageProcessorPil())  # class default: CLIP
    assert spec.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    assert spec.height == 32 and spec.fit == "pad"


def test_bad_specs_raise():
    with pytest.raises(TokredError, match="square"):
        PixelSpec(32, 48, (0.5,) * 3, (0.5,) * 3, 1 / 255, Image.Resampling.BICUBIC, "pad")
    with pytest.raises(TokredError, match="std"):
        PixelSpec(32, 32, (0.5,) * 3, (0.5, 0.0, 0.5), 1 / 255, Image.Resampling.BICUBIC, "crop")
