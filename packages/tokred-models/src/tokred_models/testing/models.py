"""The tiny models of the tokred-models tests, with weights drawn so every layer matters."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
import transformers as hf
from torch import nn

from .configs import (
    TEXT,
    _ids,
    chameleon_config,
    chameleon_image_tokens,
    emu3_config,
    janus_config,
    llama_config,
    mistral_config,
    qwen2_config,
    text_fields,
)

VOCAB = TEXT["vocab_size"]
TEXT_TOKENS = (3, 80)  # ids drawn for tokens; Chameleon masks the logits of 80..87 (image codes)
IMAGE_TOKEN_ID = 90
"""The input-image placeholder of the unified models below."""
# One VQ level, no downsampling: these tests patch the decoder, the VQ only has to exist.
_ONE_LEVEL = dict(channel_multiplier=[1])


def _llama(layers: int = 4) -> nn.Module:
    return hf.LlamaForCausalLM(llama_config(num_hidden_layers=layers))


def _qwen2() -> nn.Module:
    config = qwen2_config()
    assert config.layer_types == ["full_attention"] * 2 + ["sliding_attention"] * 2
    return hf.Qwen2ForCausalLM(config)


def _mistral() -> nn.Module:
    return hf.MistralForCausalLM(mistral_config())


def _chameleon(swin_norm: bool = False) -> nn.Module:
    vocabulary_map = {"<image>": IMAGE_TOKEN_ID, **_ids(chameleon_image_tokens(8), range(80, 88))}
    vq = dict(_ONE_LEVEL, latent_channels=32)
    config = chameleon_config(vocabulary_map, codes=8, vq=vq, swin_norm=swin_norm)
    return hf.ChameleonForConditionalGeneration(config)


def _emu3() -> nn.Module:
    vq = dict(_ONE_LEVEL, hidden_size=8, temporal_downsample_factor=1)
    config = emu3_config({"<image>": IMAGE_TOKEN_ID}, codes=8, vq=vq)
    return hf.Emu3ForConditionalGeneration(config)


def _emu3_causal() -> nn.Module:
    return hf.Emu3ForCausalLM(hf.Emu3TextConfig(**text_fields()))


def _janus() -> nn.Module:
    config = janus_config(IMAGE_TOKEN_ID, codes=16, patch_size=8, vq=_ONE_LEVEL)
    return hf.JanusForConditionalGeneration(config)


ARCHITECTURES: dict[str, Callable[[], nn.Module]] = {
    "llama": _llama,
    "qwen2": _qwen2,
    "mistral": _mistral,
    "chameleon": _chameleon,
    "chameleon_swin": lambda: _chameleon(swin_norm=True),
    "emu3": _emu3,
    "emu3_causal_lm": _emu3_causal,
    "janus": _janus,
}


def build(name: str, seed: int = 0) -> nn.Module:
    """A tiny model of architecture `name` with randomized weights, in eval mode, float32."""
    return _finish(ARCHITECTURES[name], seed)


def build_llama(layers: int = 4, seed: int = 0) -> nn.Module:
    return _finish(lambda: _llama(layers), seed)


def _finish(factory: Callable[[], nn.Module], seed: int) -> nn.Module:
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = factory()
    randomize_(model, seed)
    return model.float().eval()


@torch.no_grad()
def randomize_(model: nn.Module, seed: int) -> None:
    """Unit-scale embeddings, 1/sqrt(fan_in) linears, norms near 1 (see module docstring)."""
    g = torch.Generator().manual_seed(seed + 1000)
    for name, p in model.named_parameters():
        if name.endswith("embed_tokens.weight") or "embedding" in name:
            p.copy_(torch.randn(p.shape, generator=g))
        elif "norm" in name and name.endswith("weight"):
            p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
        elif p.dim() >= 2:
            p.copy_(torch.randn(p.shape, generator=g) * (1.5 / math.sqrt(p.shape[1])))
        else:
            p.copy_(0.1 * torch.randn(p.shape, generator=g))


@torch.no_grad()
def perturb_image_projections_(model: nn.Module, scale: float = 0.5, seed: int = 7) -> int:
    """Make every image projection set differ from the text projections; returns how many."""
    g = torch.Generator().manual_seed(seed)
    count = 0
    for name, p in model.named_parameters():
        if ".image_proj." in name:
            p.add_(torch.randn(p.shape, generator=g) * scale * p.abs().mean())
            count += 1
    return count
