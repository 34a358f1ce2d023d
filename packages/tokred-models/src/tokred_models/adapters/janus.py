"""Janus: the language model (a Llama) under `model.language_model`."""

from __future__ import annotations

from .base import DecoderAdapter, register_adapter

__all__ = ["JanusAdapter"]


class JanusAdapter(DecoderAdapter):
    model_types = ("janus",)
    decoder_paths = ("model.language_model", "language_model")


register_adapter(JanusAdapter())
