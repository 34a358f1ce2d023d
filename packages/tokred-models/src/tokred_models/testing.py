"""Tiny Hugging Face models, batches and comparisons shared by the tokred-models tests.

Every model is built from a config with random weights (nothing is downloaded): hidden
size 32, 4 heads over 2 key/value heads (GQA), float32, attention dropout 0 so train mode
is deterministic. `randomize_` then redraws the weights at a scale where attention is
sharp and every layer matters: with Hugging Face's init (std 0.02) attention is almost
uniform and a wrongly routed token would barely move the logits.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
import transformers as hf
from tokred_core import TaskPolicies, TokenLayout
from tokred_core.policies import FastV, HiMix, HMGen, PyramidDrop, RandomDrop
from torch import nn

VOCAB = 96
TEXT_TOKENS = (3, 80)  # ids drawn for tokens; Chameleon masks the logits of 80..87 (image codes)

COMMON = dict(
    vocab_size=VOCAB,
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


def _llama(layers: int = 4) -> nn.Module:
    return hf.LlamaForCausalLM(hf.LlamaConfig(**{**COMMON, "num_hidden_layers": layers}))


def _qwen2() -> nn.Module:
    # Qwen2 has q/k/v biases; sliding windows (5 < sequence) on layers >= 2 only, so the
    # per-layer window choice (config.layer_types) is exercised too.
    config = hf.Qwen2Config(
        **COMMON, use_sliding_window=True, sliding_window=5, max_window_layers=2
    )
    assert config.layer_types == ["full_attention"] * 2 + ["sliding_attention"] * 2
    return hf.Qwen2ForCausalLM(config)


def _mistral() -> nn.Module:
    return hf.MistralForCausalLM(hf.MistralConfig(**COMMON, sliding_window=5))


def _chameleon(swin_norm: bool = False) -> nn.Module:
    vocabulary_map = {"<image>": 90, **{f"IMGIMG{chr(65 + i)}Z": 80 + i for i in range(8)}}
    vq = dict(
        embed_dim=8,
        num_embeddings=8,
        latent_channels=32,
        resolution=16,
        base_channels=32,  # GroupNorm(32 groups) needs multiples of 32
        channel_multiplier=[1],
        num_res_blocks=1,
    )
    config = hf.ChameleonConfig(
        **COMMON, vocabulary_map=vocabulary_map, vq_config=vq, swin_norm=swin_norm
    )
    return hf.ChameleonForConditionalGeneration(config)


def _emu3() -> nn.Module:
    vq = dict(
        codebook_size=8,
        embed_dim=4,
        latent_channels=4,
        base_channels=32,
        channel_multiplier=[1],
        num_res_blocks=1,
        attn_resolutions=[],
        hidden_size=8,
        temporal_downsample_factor=1,
    )
    config = hf.Emu3Config(text_config=dict(COMMON), vq_config=vq, vocabulary_map={"<image>": 90})
    return hf.Emu3ForConditionalGeneration(config)


def _emu3_causal() -> nn.Module:
    return hf.Emu3ForCausalLM(hf.Emu3TextConfig(**COMMON))


def _janus() -> nn.Module:
    vision = dict(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=16,
        patch_size=8,
        projection_dim=32,
        mlp_ratio=2.0,
        num_image_tokens=4,
    )
    vq = dict(
        embed_dim=8,
        num_embeddings=16,
        latent_channels=32,
        base_channels=32,
        channel_multiplier=[1],
        num_res_blocks=1,
        projection_dim=32,
        image_token_embed_dim=32,
        num_hidden_layers=1,
    )
    config = hf.JanusConfig(
        text_config=dict(model_type="llama", **COMMON),
        vision_config=vision,
        vq_config=vq,
        image_token_id=90,
    )
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
    }
    return {
        k: (TaskPolicies(p) if isinstance(p, dict) else TaskPolicies.uniform(p), s)
        for k, (p, s) in cases.items()
    }
