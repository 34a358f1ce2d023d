"""4-bit quantization of a model built in memory (the tiny model), for QLoRA on any device.

Hugging Face models are quantized while loading (BitsAndBytesConfig, model_builder.py). The
tiny model is built from a config, so here its decoder linears are swapped in place for
bitsandbytes `Linear4bit` holding the same weights; the weights are packed to 4 bits when
the module is moved to its device (`.to(device)`, also on the CPU). Embeddings and the
output head stay in full precision, as transformers does for `lm_head`.
"""

from __future__ import annotations

import torch
from tokred_core import TokredError
from torch import nn

__all__ = ["quantize_linears_4bit_", "is_4bit", "keep_4bit_layout"]


def _bnb():
    try:
        import bitsandbytes as bnb
    except Exception as exc:  # ImportError, or a broken native library
        raise TokredError(
            f"lora.quantize_4bit needs bitsandbytes, which failed to import ({exc})"
        ) from None
    return bnb


def is_4bit(module: nn.Module) -> bool:
    try:
        import bitsandbytes as bnb
    except Exception:
        return False
    return isinstance(module, bnb.nn.Linear4bit)


def quantize_linears_4bit_(
    root: nn.Module,
    quant_type: str = "nf4",
    compute_dtype: torch.dtype = torch.float32,
) -> list[str]:
    """Replace every nn.Linear under `root` by a bnb Linear4bit with its weights (frozen).

    Returns the names of the replaced modules (relative to `root`).
    """
    bnb = _bnb()
    replaced: list[str] = []
    for name, module in list(root.named_modules()):
        for child_name, child in list(module.named_children()):
            if type(child) is not nn.Linear:
                continue
            q = bnb.nn.Linear4bit(
                child.in_features,
                child.out_features,
                bias=child.bias is not None,
                compute_dtype=compute_dtype,
                quant_type=quant_type,
                device=torch.device("meta"),
            )
            q.weight = bnb.nn.Params4bit(
                child.weight.data.detach().clone().cpu(), requires_grad=False, quant_type=quant_type
            )
            if child.bias is not None:
                q.bias = nn.Parameter(child.bias.data.detach().clone().cpu(), requires_grad=False)
            setattr(module, child_name, q)
            replaced.append(f"{name}.{child_name}" if name else child_name)
    return replaced


def keep_4bit_layout(root: nn.Module) -> int:
    """Keep every bnb Linear4bit under `root` in its trainable storage layout; returns how
    many there are.

    Why: on a CPU with AVX512-BF16, bitsandbytes (0.50) repacks a Linear4bit's weights in
    place for a faster CPU kernel the first time it runs in eval mode without gradients
    (validation, evaluation). That repack asserts out_features % 32 == 0, so it crashes on
    layers of other widths, and it changes the stored weights of a model that goes on
    training. Turning it off makes a QLoRA run compute the same way on every CPU.
    """
    count = 0
    for module in root.modules():
        if is_4bit(module):
            module.support_avx512bf16_for_cpu = False
            count += 1
    return count
