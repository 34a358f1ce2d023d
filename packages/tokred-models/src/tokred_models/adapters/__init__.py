"""Architecture adapters, registered by config.model_type."""

from . import chameleon, emu3, janus, llama  # noqa: F401  (registration)
from .base import DecoderAdapter, adapter_for, register_adapter, supported_model_types

__all__ = ["DecoderAdapter", "adapter_for", "register_adapter", "supported_model_types"]
