"""The stand-in configs: one builder per architecture, over one tiny Llama-style stack."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import transformers as hf
from tokred_core import TokredError

TEXT: dict[str, Any] = dict(
    vocab_size=96,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
    attention_dropout=0.0,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)
"""The language model of every stand-in (see the module docstring)."""


def text_fields(**overrides: Any) -> dict[str, Any]:
    """`TEXT` with `overrides`: the fields of a stand-in's language model config."""
    return {**TEXT, **overrides}


def llama_config(**text: Any) -> hf.LlamaConfig:
    return hf.LlamaConfig(**text_fields(**text))


def qwen2_config(**text: Any) -> hf.Qwen2Config:
    """Qwen2 has q/k/v biases; sliding windows (5 tokens) on layers >= 2 only, so the
    per-layer window choice (config.layer_types) is exercised too."""
    window = dict(use_sliding_window=True, sliding_window=5, max_window_layers=2)
    return hf.Qwen2Config(**text_fields(**{**window, **text}))


def mistral_config(**text: Any) -> hf.MistralConfig:
    """Mistral with a sliding window of 5 tokens on every layer."""
    return hf.MistralConfig(**text_fields(**{"sliding_window": 5, **text}))


def chameleon_config(
    vocabulary_map: Mapping[str, int],
    *,
    codes: int = 16,
    vq: Mapping[str, Any] | None = None,
    **text: Any,
) -> hf.ChameleonConfig:
    """Chameleon: its VQ writes a 16 px image as 8 x 8 codes from a codebook of `codes`;
    `vocabulary_map` names the LM id of each code's token (`chameleon_image_tokens`) and of
    `<image>`, the placeholder of an input image."""
    vq_config = dict(
        embed_dim=8,
        num_embeddings=codes,
        latent_channels=8,
        resolution=16,
        base_channels=32,  # GroupNorm(32 groups) needs multiples of 32
        channel_multiplier=[1, 2],  # downsampling 2: 16 px -> 8 x 8 codes
        num_res_blocks=1,
        attn_resolutions=None,
    )
    return hf.ChameleonConfig(
        **text_fields(**text),
        vocabulary_map=dict(vocabulary_map),
        vq_config={**vq_config, **(vq or {})},
    )


def emu3_config(
    vocabulary_map: Mapping[str, int],
    *,
    codes: int = 8,
    vq: Mapping[str, Any] | None = None,
    **text: Any,
) -> hf.Emu3Config:
    """Emu3: its VQ writes an image as a grid of codes (spatial factor 2, the image repeated
    over 2 frames) from a codebook of `codes`; `vocabulary_map` names the LM id of each
    code's visual token (`emu3_image_tokens`) and of Emu3's special tokens."""
    vq_config = dict(
        codebook_size=codes,
        embed_dim=4,
        latent_channels=4,
        base_channels=32,
        channel_multiplier=[1, 2],  # spatial factor 2
        num_res_blocks=1,
        attn_resolutions=[],
        hidden_size=64,  # the middle attention runs at base_channels * 2
        num_attention_heads=1,
        temporal_downsample_factor=2,  # the image is repeated over 2 frames
    )
    return hf.Emu3Config(
        vocabulary_map=dict(vocabulary_map),
        text_config=text_fields(**text),
        vq_config={**vq_config, **(vq or {})},
    )


def janus_config(
    image_token_id: int,
    *,
    codes: int = 32,
    patch_size: int = 4,
    vision: Mapping[str, Any] | None = None,
    vq: Mapping[str, Any] | None = None,
    **text: Any,
) -> hf.JanusConfig:
    """Janus: SigLIP reads a 16 px image in patches of `patch_size`, one token each; the VQ
    works on that patch grid (16 // patch_size per side; its decoder doubles it) with a
    codebook of `codes`. `image_token_id` is the placeholder of an input image's tokens.
    Both aligners project to the language model's width."""
    text_config = text_fields(**text)
    width = text_config["hidden_size"]
    vision_config = dict(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=16,
        patch_size=patch_size,
        projection_dim=width,
        mlp_ratio=2.0,
        num_image_tokens=(16 // patch_size) ** 2,
    )
    vq_config = dict(
        embed_dim=8,
        num_embeddings=codes,
        latent_channels=32,
        base_channels=32,
        channel_multiplier=[1, 2],  # downsampling 2
        num_res_blocks=1,
        projection_dim=width,
        image_token_embed_dim=width,
        num_hidden_layers=1,
    )
    return hf.JanusConfig(
        text_config=dict(model_type="llama", **text_config),
        vision_config={**vision_config, **(vision or {})},
        vq_config={**vq_config, **(vq or {})},
        image_token_id=image_token_id,
    )


CONFIGS: dict[str, Callable[..., hf.PretrainedConfig]] = {
    "llama": llama_config,
    "qwen2": qwen2_config,
    "mistral": mistral_config,
    "chameleon": chameleon_config,
    "emu3": emu3_config,
    "janus": janus_config,
}
"""The config builder of each supported architecture, by model_type."""


def tiny_config(name: str, *args: Any, **kwargs: Any) -> hf.PretrainedConfig:
    """The stand-in config of architecture `name` (a key of `CONFIGS`); the arguments go to
    its builder (the unified families need their image tokens' ids, see each builder)."""
    if name not in CONFIGS:
        raise TokredError(f"no tiny config for {name!r}; known: {', '.join(CONFIGS)}")
    return CONFIGS[name](*args, **kwargs)


def chameleon_image_tokens(codes: int) -> list[str]:
    """The tokens that stand for Chameleon's image codes 0..codes-1: `IMGIMG<digits as
    letters>Z` (code 12 is IMGIMGBCZ), as transformers' vocabulary mapping reads them."""
    return ["IMGIMG" + "".join(chr(ord("A") + int(d)) for d in str(c)) + "Z" for c in range(codes)]


def emu3_image_tokens(codes: int) -> list[str]:
    """The visual tokens that stand for Emu3's image codes 0..codes-1."""
    return [f"<|visual token{c:06d}|>" for c in range(codes)]


def _ids(tokens: Iterable[str], ids: Iterable[int]) -> dict[str, int]:
    return dict(zip(tokens, ids, strict=True))
