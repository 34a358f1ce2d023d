"""Llama-family decoders (llama, qwen2, mistral): pre-norm, layers return a tensor.

Qwen2 adds biases to q/k/v (copied with the projections) and, like Mistral, may use
sliding-window layers, which the base adapter reads from the config.
"""

from __future__ import annotations

from .base import DecoderAdapter, register_adapter

__all__ = ["LlamaAdapter"]


class LlamaAdapter(DecoderAdapter):
    model_types = ("llama", "qwen2", "mistral")


register_adapter(LlamaAdapter())
