"""Emu3: a Llama-style text decoder under `model.text_model` (or Emu3ForCausalLM's `model`)."""

from __future__ import annotations

from .base import DecoderAdapter, register_adapter

__all__ = ["Emu3Adapter"]


class Emu3Adapter(DecoderAdapter):
    # "emu3_text_model" is the model_type of Emu3ForCausalLM's config (Emu3TextConfig).
    model_types = ("emu3", "emu3_text_model")
    decoder_paths = ("model.text_model", "text_model", "model", "")


register_adapter(Emu3Adapter())
