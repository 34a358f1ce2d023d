"""What an architecture must tell the reduced decoder layer.

One small adapter per architecture (DESIGN.md: no 3,600-line patch file), registered by
`config.model_type`. The reduced layer (reduced_layer.py) is generic: it asks the adapter
where the decoder layers are, how attention normalises q/k, where the norms sit and what
a layer returns, and does the rest itself.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from tokred_core import TokredError
from torch import nn

__all__ = ["DecoderAdapter", "register_adapter", "adapter_for", "supported_model_types"]

_ADAPTERS: dict[str, DecoderAdapter] = {}


class DecoderAdapter:
    """Defaults describe a Llama-style pre-norm decoder whose layers return a tensor."""

    model_types: ClassVar[tuple[str, ...]] = ()
    # Attribute paths, tried in order, from the loaded model to the module holding `.layers`.
    decoder_paths: ClassVar[tuple[str, ...]] = ("model", "")
    # Whether the original layer returns a 1-tuple (older HF style) instead of a tensor.
    returns_tuple: ClassVar[bool] = False

    def decoder(self, model: nn.Module) -> nn.Module:
        for path in self.decoder_paths:
            module = model
            for name in filter(None, path.split(".")):
                module = getattr(module, name, None)
                if module is None:
                    break
            if module is not None and isinstance(getattr(module, "layers", None), nn.ModuleList):
                return module
        raise TokredError(
            f"cannot find the decoder layers of {type(model).__name__} "
            f"(looked under: {', '.join(p or '<model>' for p in self.decoder_paths)})"
        )

    def layers(self, model: nn.Module) -> nn.ModuleList:
        return self.decoder(model).layers

    def text_config(self, model: nn.Module):
        return self.decoder(model).config

    # ---- per layer ----------------------------------------------------------------------
    def attention(self, layer: nn.Module) -> nn.Module:
        return layer.self_attn

    def input_norm(self, layer: nn.Module) -> nn.Module:
        return layer.input_layernorm

    def post_norm(self, layer: nn.Module) -> nn.Module:
        return layer.post_attention_layernorm

    def mlp(self, layer: nn.Module) -> nn.Module:
        return layer.mlp

    def norm_placement(self, model: nn.Module) -> Literal["pre", "swin"]:
        """ "pre": x + attn(norm(x)), x + mlp(norm(x)); "swin": x + norm(attn(x)), x + norm(mlp(x))."""
        return "pre"

    def qk_norm(
        self, attn: nn.Module, q: torch.Tensor, k: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """q: (n, H, D), k: (n, Hkv, D) before RoPE; identity unless the model normalises."""
        return q, k

    def sliding_window(self, model: nn.Module, layer_idx: int) -> int | None:
        """Tokens a query may look back (None: unlimited), matching the model's own mask."""
        config = self.text_config(model)
        window = getattr(config, "sliding_window", None)
        layer_types = getattr(config, "layer_types", None)
        if window is None:
            return None
        if layer_types is not None and layer_types[layer_idx] != "sliding_attention":
            return None
        if layer_types is None and getattr(config, "use_sliding_window", True) is False:
            return None
        return int(window)

    def wrap_output(self, hidden: torch.Tensor):
        return (hidden,) if self.returns_tuple else hidden


def register_adapter(adapter: DecoderAdapter) -> DecoderAdapter:
    for model_type in adapter.model_types:
        _ADAPTERS[model_type] = adapter
    return adapter


def supported_model_types() -> tuple[str, ...]:
    return tuple(sorted(_ADAPTERS))


def adapter_for(model: nn.Module) -> DecoderAdapter:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in _ADAPTERS:
        raise TokredError(
            f"unsupported model type {model_type!r} ({type(model).__name__}); "
            f"supported: {', '.join(supported_model_types())}"
        )
    return _ADAPTERS[model_type]
