"""Image tokenizers over Chameleon, Emu3 and Janus: tiny random models built from configs.

Each model gets: shapes and ranges, parity with the model's own entry points
(get_image_tokens / decode_image_tokens / vqmodel.encode), the vocabulary round trip,
quantizer idempotence, and the error paths.

Why no "decode(encode(x)) re-encodes to the same codes" assertion: with random weights
the encoder and decoder are not inverse to each other, so re-encoding a decoded image
agrees with the first codes little better than chance (measured on random images with
these configs: about 7% for Janus and 25% for Emu3, chance being 1/32). The property that *is* exact for a VQ model, that quantizing a
codebook vector gives back its own code, is checked on each model's own quantizer; the
rest of the round trip needs trained weights.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from tokred_core import TokredError
from tokred_models.testing import (
    chameleon_config,
    chameleon_image_tokens,
    emu3_config,
    emu3_image_tokens,
    janus_config,
)
from tokred_train.families.base import nearest_codes
from tokred_train.families.image_tokenizers import (
    ChameleonImageTokenizer,
    Emu3ImageTokenizer,
    JanusImageTokenizer,
    image_tokenizer_for,
)

CODES = 32  # codebook size of every tiny model
# A smaller language model than the stand-ins' (only the image side is tested here).
TEXT = dict(
    vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
)


def _perm(seed: int) -> list[int]:
    # Image tokens at shuffled ids, so a mapping that assumes an offset would fail.
    return torch.randperm(CODES, generator=torch.Generator().manual_seed(seed)).tolist()


def _shuffled_ids(tokens: list[str], seed: int) -> dict[str, int]:
    return {token: 10 + p for token, p in zip(tokens, _perm(seed), strict=True)}


@pytest.fixture(scope="module")
def chameleon():
    from transformers import ChameleonModel

    torch.manual_seed(0)
    vocab = {"<image>": 5, **_shuffled_ids(chameleon_image_tokens(CODES), 0)}
    return ChameleonModel(chameleon_config(vocab, codes=CODES, **TEXT)).eval()


@pytest.fixture(scope="module")
def emu3():
    from transformers import Emu3Model

    torch.manual_seed(1)
    vocab = {"<image>": 3, "<|extra_200|>": 4, **_shuffled_ids(emu3_image_tokens(CODES), 1)}
    return Emu3Model(emu3_config(vocab, codes=CODES, **TEXT)).eval()


@pytest.fixture(scope="module")
def janus():
    from transformers import JanusForConditionalGeneration

    torch.manual_seed(2)
    # vq num_patches = vision image_size // patch_size = 8: 8 x 8 codes -> 16 px. Hugging
    # Face's default vision MLP and aligner depth, as these tests were written with.
    config = janus_config(
        5, codes=CODES, patch_size=2, vision={"mlp_ratio": 4.0}, vq={"num_hidden_layers": 2}, **TEXT
    )
    return JanusForConditionalGeneration(config).eval()


def _images(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


# ---- shapes, ranges, sizes ------------------------------------------------------------


def test_chameleon_encode_shapes(chameleon):
    tok = image_tokenizer_for(chameleon)
    assert isinstance(tok, ChameleonImageTokenizer)
    assert tok.image_size == (16, 16) and tok.grid == (8, 8)
    assert tok.num_tokens_per_image == 64 and tok.codebook_size == CODES
    codes = tok.encode(_images(3, 16, 16))
    assert codes.dtype == torch.long and codes.shape == (3, 64) and codes.device.type == "cpu"
    assert int(codes.min()) >= 0 and int(codes.max()) < CODES
    # Deterministic, and other sizes / PIL inputs are fitted to the model's resolution.
    assert torch.equal(tok.encode(_images(3, 16, 16)), codes)
    mixed = [Image.fromarray(_images(1, 40, 60)[0]), _images(1, 20, 20)[0]]
    assert tok.encode(mixed).shape == (2, 64)


def test_emu3_encode_decode_shapes(emu3):
    tok = image_tokenizer_for(emu3, image_size=(16, 24))  # non-square: 8 rows x 12 cols
    assert isinstance(tok, Emu3ImageTokenizer)
    assert tok.grid == (8, 12) and tok.num_tokens_per_image == 96
    assert tok.num_lm_tokens_per_image == 8 * 13
    codes = tok.encode(_images(2, 16, 24))
    assert codes.shape == (2, 96) and int(codes.min()) >= 0 and int(codes.max()) < CODES
    out = tok.decode(codes)
    assert out.dtype == torch.uint8 and out.shape == (2, 16, 24, 3)
    assert tok.decode(codes[0]).shape == (1, 16, 24, 3)  # (T,) is one image


def test_janus_encode_decode_shapes(janus):
    tok = image_tokenizer_for(janus)
    assert isinstance(tok, JanusImageTokenizer)
    assert tok.image_size == (16, 16) and tok.grid == (8, 8)
    codes = tok.encode(_images(3, 16, 16))
    assert codes.shape == (3, 64) and int(codes.min()) >= 0 and int(codes.max()) < CODES
    out = tok.decode(codes, batch_size=2)  # chunked decode gives the same as one batch
    assert out.dtype == torch.uint8 and out.shape == (3, 16, 16, 3)
    assert torch.equal(out, tok.decode(codes))
    assert tok.encode([Image.fromarray(_images(1, 50, 20)[0])]).shape == (1, 64)


# ---- parity with the models' own entry points -----------------------------------------


def test_chameleon_matches_get_image_tokens(chameleon):
    tok = ChameleonImageTokenizer.from_model(chameleon)
    x = _images(2, 16, 16, seed=3)
    with torch.no_grad():
        ids = chameleon.get_image_tokens(tok.preprocess(x))
    assert torch.equal(tok.codes_to_token_ids(tok.encode(x)), ids.long())


def test_emu3_matches_get_image_tokens_and_decode_image_tokens(emu3):
    tok = Emu3ImageTokenizer.from_model(emu3, image_size=(16, 24))
    x = _images(2, 16, 24, seed=4)
    px = tok.preprocess(x)
    with torch.no_grad():
        ids = emu3.get_image_tokens(px, torch.tensor([[16, 24]] * 2)).view(2, -1)
    codes = tok.encode(x)
    assert torch.equal(tok.codes_to_token_ids(codes, row_ends=True), ids.long())
    # decode_image_tokens takes LM ids with row ends and three trailing special tokens.
    trailing = torch.zeros(2, 3, dtype=torch.long)
    pixels = emu3.decode_image_tokens(torch.cat([ids, trailing], 1), height=8, width=12)
    assert torch.equal(tok.decode(codes), tok.postprocess(pixels))


def test_janus_matches_vqmodel_and_decode_image_tokens(janus):
    tok = JanusImageTokenizer.from_model(janus)
    x = _images(2, 16, 16, seed=5)
    euclid = JanusImageTokenizer.from_model(janus, l2_normalized=False)
    with torch.no_grad():
        hf_codes = janus.model.vqmodel.encode(tok.preprocess(x), return_dict=True).image_tokens
        codes = tok.encode(x)
        pixels = janus.decode_image_tokens(codes)  # (B, H, W, 3), normalised
    assert torch.equal(euclid.encode(x), hf_codes.view(2, -1))
    assert torch.equal(tok.decode(codes), tok.postprocess(pixels.permute(0, 3, 1, 2)))


def test_janus_cosine_lookup_equals_hf_quantizer_on_unit_codebook(janus):
    # With unit-norm codebook rows, Euclidean argmin and cosine argmax pick the same
    # code, so the L2 path must agree exactly with transformers' own quantizer there.
    model = copy.deepcopy(janus)
    emb = model.model.vqmodel.quantize.embedding.weight
    with torch.no_grad():
        emb.copy_(torch.nn.functional.normalize(emb, dim=-1))
    x = _images(2, 16, 16, seed=6)
    cos = JanusImageTokenizer.from_model(model).encode(x)
    euclid = JanusImageTokenizer.from_model(model, l2_normalized=False).encode(x)
    assert torch.equal(cos, euclid)


# ---- idempotence ----------------------------------------------------------------------


def test_quantizers_return_a_codebook_vectors_own_code(chameleon, emu3, janus):
    ids = torch.arange(CODES)
    # Chameleon: its quantizer on (B, C, H, W) latents.
    q = chameleon.vqmodel.quantize
    latents = q.embedding.weight.detach().T.reshape(1, -1, 1, CODES)
    assert torch.equal(q(latents)[2], ids)
    # Emu3: its quantizer on (B, T, C, H, W) latents.
    q = emu3.vqmodel.quantize
    latents = q.embedding.weight.detach().T.reshape(1, 1, -1, 1, CODES)
    assert torch.equal(q(latents).flatten(), ids)
    # Janus: the cosine lookup used by encode, and transformers' Euclidean quantizer.
    q = janus.model.vqmodel.quantize
    assert torch.equal(nearest_codes(q.embedding.weight, q.embedding.weight, cosine=True), ids)
    latents = q.embedding.weight.detach().T.reshape(1, -1, 1, CODES)
    assert torch.equal(q(latents)[2], ids)


def test_reencoding_decoded_images_is_valid_and_deterministic(emu3, janus):
    # See the module docstring: exact agreement needs trained weights.
    for tok in (image_tokenizer_for(emu3, image_size=16), image_tokenizer_for(janus)):
        codes = tok.encode(_images(2, 16, 16, seed=7))
        decoded = tok.decode(codes)
        again = tok.encode(decoded)
        assert again.shape == codes.shape and int(again.max()) < CODES
        assert torch.equal(tok.encode(decoded), again)


# ---- vocabulary -----------------------------------------------------------------------


def test_chameleon_vocabulary_round_trip(chameleon):
    tok = image_tokenizer_for(chameleon)
    codes = torch.arange(CODES).repeat(2).view(1, 64)
    ids = tok.codes_to_token_ids(codes)
    mapping = chameleon.vocabulary_mapping
    assert ids.dtype == torch.long and set(ids.flatten().tolist()) == set(mapping.image_tokens)
    assert all(mapping.bpe2img[int(i)] == int(c) for i, c in zip(ids[0], codes[0], strict=True))
    assert torch.equal(tok.token_ids_to_codes(ids), codes)
    assert tok.image_placeholder_id == 5
    with pytest.raises(TokredError, match="not Chameleon image tokens"):
        tok.token_ids_to_codes(torch.full((1, 64), 5))


def test_emu3_vocabulary_round_trip_with_and_without_row_ends(emu3):
    tok = image_tokenizer_for(emu3, image_size=(16, 24))
    codes = torch.randint(0, CODES, (3, 96), generator=torch.Generator().manual_seed(0))
    plain = tok.codes_to_token_ids(codes)
    ended = tok.codes_to_token_ids(codes, row_ends=True)
    assert plain.shape == (3, 96) and ended.shape == (3, 8 * 13)
    assert torch.equal(ended.view(3, 8, 13)[..., -1], torch.full((3, 8), 4))
    assert torch.equal(ended.view(3, 8, 13)[..., :-1].reshape(3, 96), plain)
    assert torch.equal(tok.token_ids_to_codes(plain), codes)
    assert torch.equal(tok.token_ids_to_codes(ended), codes)
    broken = ended.clone()
    broken[0, 12] = plain[0, 0]  # a row end replaced by an image token
    with pytest.raises(TokredError, match="row-end"):
        tok.token_ids_to_codes(broken)
    with pytest.raises(TokredError, match="not Emu3 visual tokens"):
        tok.token_ids_to_codes(torch.full((1, 96), 3))


def test_janus_has_no_vocabulary(janus):
    tok = image_tokenizer_for(janus)
    assert not tok.has_vocabulary
    with pytest.raises(TokredError, match="generation_head"):
        tok.codes_to_token_ids(torch.zeros(1, 64, dtype=torch.long))


# ---- errors and edge cases --------------------------------------------------------------


def test_chameleon_cannot_decode(chameleon):
    tok = image_tokenizer_for(chameleon)
    assert not tok.can_decode
    with pytest.raises(TokredError, match="no decoder"):
        tok.decode(torch.zeros(1, 64, dtype=torch.long))


def test_bare_vq_model_tokenizes_without_vocabulary(chameleon, emu3):
    tok = image_tokenizer_for(chameleon.vqmodel)  # model_type 'chameleon_vqgan'
    assert isinstance(tok, ChameleonImageTokenizer) and not tok.has_vocabulary
    assert torch.equal(
        tok.encode(_images(1, 16, 16)), image_tokenizer_for(chameleon).encode(_images(1, 16, 16))
    )
    with pytest.raises(TokredError, match="vocabulary mapping"):
        tok.codes_to_token_ids(torch.zeros(1, 64, dtype=torch.long))
    assert isinstance(image_tokenizer_for(emu3.vqmodel, image_size=16), Emu3ImageTokenizer)


def test_unsupported_model_names_supported_types():
    fake = torch.nn.Linear(2, 2)
    fake.config = SimpleNamespace(model_type="llama")
    with pytest.raises(TokredError, match="'llama'") as err:
        image_tokenizer_for(fake)
    for name in ("chameleon", "emu3", "janus"):
        assert name in str(err.value)
    with pytest.raises(TokredError, match="supported"):
        image_tokenizer_for(torch.nn.Linear(2, 2))  # no config at all


def test_bad_codes_and_sizes_raise(emu3, janus):
    tok = image_tokenizer_for(janus)
    with pytest.raises(TokredError, match="outside 0..31"):
        tok.decode(torch.full((1, 64), CODES))
    with pytest.raises(TokredError, match=r"expected \(batch, 64\)"):
        tok.decode(torch.zeros(1, 63, dtype=torch.long))
    with pytest.raises(TokredError, match="integers"):
        tok.decode(torch.zeros(1, 64))
    with pytest.raises(TokredError, match="uint8"):
        tok.encode(np.zeros((1, 16, 16, 3), dtype=np.float32))
    with pytest.raises(TokredError, match="multiple of the Emu3 VQ spatial factor 2"):
        image_tokenizer_for(emu3, image_size=15)


def test_mismatched_vocabulary_map_is_rejected(chameleon):
    own = chameleon.vocabulary_mapping
    mapping = type(own)({k: v for k, v in own.vocab_map.items() if k != "IMGIMGAZ"})
    with pytest.raises(TokredError, match="31 image tokens"):
        ChameleonImageTokenizer(chameleon.vqmodel, mapping)


def test_vq_mode_is_restored_and_batchnorm_untouched(emu3):
    vq = emu3.vqmodel
    tok = image_tokenizer_for(emu3, image_size=16)
    bn = next(m for m in vq.modules() if isinstance(m, torch.nn.BatchNorm3d))
    stats = bn.running_mean.clone()
    vq.train()
    try:
        first = tok.encode(_images(1, 16, 16))
        assert all(m.training for m in vq.modules())
        assert torch.equal(bn.running_mean, stats)
        vq.eval()
        assert torch.equal(tok.encode(_images(1, 16, 16)), first)
    finally:
        vq.eval()
