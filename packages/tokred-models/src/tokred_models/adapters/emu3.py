"""Emu3: a Llama-style text decoder under `model.text_model` (or Emu3ForCausalLM's `model`)."""

from __future__ import annotations

from .base import DecoderAdapter, register_adapter

__all__ = ["Emu3Adapter"]


class Emu3Adapter(DecoderAdapter):
    model_types = ("emu3",)
    decoder_paths = ("model.text_model", "text_model", "model", "")


register_adapter(Emu3Adapter())
