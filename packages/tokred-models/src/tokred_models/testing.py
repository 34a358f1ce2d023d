"""Tiny stand-ins of every supported architecture, with random weights: nothing is downloaded.

Shipped (not kept in a tests folder) so that every package's tests and users' own smoke
tests build the same stand-ins instead of restating them.

- Configs, one builder per architecture (`llama_config`, `qwen2_config`, `mistral_config`,
  `chameleon_config`, `emu3_config`, `janus_config`; `tiny_config(name, ...)` picks one by
  name). Each language model is a Llama-style stack (`text_fields`): hidden size 32, 4
  heads over 2 key/value heads (GQA), 4 layers, a vocabulary of 96, pad/bos/eos ids 0/1/2,
  attention dropout 0 so train mode is deterministic; keyword arguments override these.
  The unified families add a VQ at toy size that downsamples by 2 (a 16 px image is 8 x 8
  codes) from a codebook of `codes`; `vq=` and `vision=` override single fields of the VQ
  and of Janus' SigLIP encoder. tokred-train's stand-in folders (`tokred_train.testing`)
  are built from these.
- Models for the tokred-models tests (`build(name)`, `build_llama`): float32, then
  `randomize_` redraws the weights at a scale where attention is sharp and every layer
  matters: with Hugging Face's init (std 0.02) attention is almost uniform and a wrongly
  routed token would barely move the logits. Batches, policies and comparisons follow.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
import transformers as hf
from tokred_core import TaskPolicies, TokenLayout, TokredError
from tokred_core.policies import Aligned, FastV, HiMix, HMGen, PyramidDrop, RandomDrop
from torch import nn

__all__ = [
    "TEXT",
    "text_fields",
    "llama_config",
    "qwen2_config",
    "mistral_config",
    "chameleon_config",
    "emu3_config",
    "janus_config",
    "CONFIGS",
    "tiny_config",
    "chameleon_image_tokens",
    "emu3_image_tokens",
    "VOCAB",
    "TEXT_TOKENS",
    "IMAGE_TOKEN_ID",
    "ARCHITECTURES",
    "build",
    "build_llama",
    "randomize_",
    "perturb_image_projections_",
    "MIXED_SPANS",
    "MIXED_TASKS",
    "mixed_layout",
    "random_ids",
    "run",
    "finite_logits",
    "rel_err",
    "loss_weights",
    "logit_loss",
    "grads",
    "policy_cases",
]

# ---- configs ----------------------------------------------------------------------------
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


# ---- models for the tokred-models tests ---------------------------------------------------
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


# ---- batches ----------------------------------------------------------------------------
# A right-padded batch mixing understanding (with an input image) and generation (image
# tokens as the output), of different lengths.
MIXED_SPANS = [
    [("system", 2), ("image", 7), ("instruction", 3), ("output", 3)],
    [("system", 2), ("instruction", 3), ("output", 7)],
    [("system", 1), ("image", 5), ("instruction", 2), ("output", 2)],
    [("system", 1), ("instruction", 2), ("output", 4)],
]
MIXED_TASKS = ["understanding", "generation", "understanding", "generation"]


def mixed_layout(padding_side: str = "right", length: int | None = None) -> TokenLayout:
    return TokenLayout.from_spans(
        MIXED_SPANS, MIXED_TASKS, length=length, padding_side=padding_side
    )


def random_ids(layout: TokenLayout, seed: int = 1) -> torch.Tensor:
    """Token ids (pad id 0 at padding) for a layout."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(*TEXT_TOKENS, layout.segments.shape, generator=g)
    return ids.masked_fill(~layout.valid_mask(), 0)


def run(model: nn.Module, ids: torch.Tensor, layout: TokenLayout | None = None, **kwargs):
    """Logits of a call with the layout's attention mask (and the layout, if given)."""
    mask = kwargs.pop("attention_mask", None)
    if mask is None and layout is not None:
        mask = layout.valid_mask().long()
    extra = {} if layout is None else {"tokred_layout": layout}
    return model(input_ids=ids, attention_mask=mask, use_cache=False, **extra, **kwargs).logits


def finite_logits(logits: torch.Tensor) -> torch.Tensor:
    """Zero the logits a model pins to the dtype's minimum (Chameleon's image codes)."""
    return logits.masked_fill(logits.abs() > 1e30, 0.0)


def rel_err(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """||a - b|| / ||b|| in float64, optionally over the (B, N) positions of `mask`."""
    a, b = finite_logits(a.detach()).double(), finite_logits(b.detach()).double()
    if mask is not None:
        a, b = a[mask], b[mask]
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def loss_weights(shape: tuple[int, ...], seed: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g)


def logit_loss(logits: torch.Tensor, valid: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """A loss touching every logit of every real position with a fixed random weight."""
    return (finite_logits(logits) * weights * valid[..., None]).sum()


def grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {
        n: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p))
        for n, p in model.named_parameters()
    }


# ---- policies ---------------------------------------------------------------------------
def policy_cases(num_layers: int) -> dict[str, tuple[TaskPolicies, str]]:
    """name -> (policies, sharing) covering every policy on a mixed-task batch.

    Understanding-only policies serve the understanding rows; generation rows run
    unreduced except where hmgen serves them.
    """
    shallow_alt = 2 if num_layers >= 5 else 1
    fastv_layer = 2
    cases = {
        "himix": ({"understanding": HiMix(start_layer=0)}, "modality"),
        "himix_start1": ({"understanding": HiMix(start_layer=1)}, "modality"),
        "hmgen_alternate": (HMGen(num_shallow=shallow_alt, pattern="alternate"), "modality"),
        "hmgen_contiguous": (HMGen(num_shallow=2, pattern="contiguous"), "modality"),
        "hmgen_layers": (HMGen(layers=[1, num_layers - 2]), "task"),
        "fastv_last": ({"understanding": FastV(layer=fastv_layer, keep_ratio=0.5)}, "modality"),
        "fastv_prompt": (
            {"understanding": FastV(layer=fastv_layer, keep_ratio=0.4, query="prompt")},
            "shared",
        ),
        "pyramid_drop": ({"understanding": PyramidDrop(keep_ratio=0.5)}, "modality"),
        "random_drop": ({"understanding": RandomDrop(layer=1, keep_ratio=0.5, seed=3)}, "modality"),
        "himix_hmgen_task": (
            {"understanding": HiMix(), "generation": HMGen(num_shallow=shallow_alt)},
            "task",
        ),
        # One band for both tasks, one image set where their plans coincide (outside it).
        "aligned": (Aligned(start_layer=1, end_layer=num_layers - 1), "aligned"),
    }
    return {
        k: (TaskPolicies(p) if isinstance(p, dict) else TaskPolicies.uniform(p), s)
        for k, (p, s) in cases.items()
    }


def capture_states(handle) -> list:
    """Wrap handle.state_for to keep the ExecutionState of every forward (its plan holds
    what was executed: selections and router picks); returns the list it fills."""
    states = []
    original = handle.state_for

    def state_for(layout):
        states.append(original(layout))
        return states[-1]

    handle.state_for = state_for
    return states
