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
  routed token would barely move the logits.
- Batches mixing both tasks, comparisons, the policy cases every oracle test walks, and
  `capture_states` (cases.py).
"""

from .cases import (
    MIXED_SPANS,
    MIXED_TASKS,
    capture_states,
    finite_logits,
    grads,
    logit_loss,
    loss_weights,
    mixed_layout,
    policy_cases,
    random_ids,
    rel_err,
    run,
)
from .configs import (
    CONFIGS,
    TEXT,
    chameleon_config,
    chameleon_image_tokens,
    emu3_config,
    emu3_image_tokens,
    janus_config,
    llama_config,
    mistral_config,
    qwen2_config,
    text_fields,
    tiny_config,
)
from .models import (
    ARCHITECTURES,
    IMAGE_TOKEN_ID,
    TEXT_TOKENS,
    VOCAB,
    build,
    build_llama,
    perturb_image_projections_,
    randomize_,
)

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
    "capture_states",
]
