"""Chameleon: q/k LayerNorm per head, and the optional "swin" norm placement.

Its layers return a 1-tuple, and ChameleonLayerNorm normalises over head_dim with a
weight per head, so the reduced layer calls the model's own q_norm/k_norm on
(tokens, heads, head_dim) exactly as ChameleonAttention does.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import DecoderAdapter, register_adapter

__all__ = ["ChameleonAdapter"]


class ChameleonAdapter(DecoderAdapter):
    model_types = ("chameleon",)
    returns_tuple = True

    def norm_placement(self, model: nn.Module):
        # swin_norm makes Chameleon build ChameleonSwinDecoderLayer: norms after attn/mlp.
        return "swin" if getattr(self.text_config(model), "swin_norm", False) else "pre"

    def qk_norm(self, attn: nn.Module, q: torch.Tensor, k: torch.Tensor):
        return attn.q_norm(q), attn.k_norm(k)


register_adapter(ChameleonAdapter())
