"""tokred-models: where reduction plugs in. Instance-level patching of Hugging Face decoders."""

from .adapters import DecoderAdapter, adapter_for, register_adapter, supported_model_types
from .patch import (
    LAYOUT_KWARG,
    ReductionHandle,
    apply_reduction,
    patched_model,
    reduction_handle,
)
from .state import ExecutionState

__all__ = [
    "DecoderAdapter",
    "adapter_for",
    "register_adapter",
    "supported_model_types",
    "apply_reduction",
    "reduction_handle",
    "patched_model",
    "ReductionHandle",
    "ExecutionState",
    "LAYOUT_KWARG",
]
