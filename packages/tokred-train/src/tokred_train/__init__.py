"""tokred-train: how to train. Data (`tokred_train.data`), the config tree, model building
(tiny or Hugging Face, 4-bit, reduction patch, LoRA), the mixed-task loop, checkpoints and
metrics.

Importing this package is light: the submodules that pull in transformers, peft or
tensorboard load on first use of their names.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    # config
    "TrainConfig",
    "ModelConfig",
    "DataConfig",
    "PolicySpec",
    "ReductionConfig",
    "OptimConfig",
    "LoraConfig",
    "RunConfig",
    "EvalConfig",
    "load_config",
    "save_config",
    "config_to_dict",
    # data side
    "TrainData",
    "TaskSamples",
    "ImageTokenizer",
    "TokenVocab",
    "MixedBatchSampler",
    "build_train_data",
    "build_embedded_data",
    "register_model_io",
    # model side
    "BuiltModel",
    "build_model",
    "apply_lora",
    "quantize_linears_4bit_",
    # loop
    "train",
    "RunResult",
    # checkpoints
    "save_checkpoint",
    "load_checkpoint",
    "find_latest_checkpoint",
    # distributed
    "DistInfo",
    "dist_info",
]

_WHERE = {
    "TrainConfig": "config",
    "ModelConfig": "config",
    "DataConfig": "config",
    "PolicySpec": "config",
    "ReductionConfig": "config",
    "OptimConfig": "config",
    "LoraConfig": "config",
    "RunConfig": "config",
    "EvalConfig": "config",
    "load_config": "config",
    "save_config": "config",
    "config_to_dict": "config",
    "TrainData": "training_data",
    "TaskSamples": "training_data",
    "ImageTokenizer": "protocols",
    "TokenVocab": "protocols",
    "MixedBatchSampler": "sampler",
    "build_train_data": "embedded",
    "build_embedded_data": "embedded",
    "register_model_io": "families",
    "BuiltModel": "model_builder",
    "build_model": "model_builder",
    "apply_lora": "lora",
    "quantize_linears_4bit_": "quantize",
    "train": "loop",
    "RunResult": "loop",
    "save_checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
    "find_latest_checkpoint": "checkpoint",
    "DistInfo": "distributed",
    "dist_info": "distributed",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'tokred_train' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
