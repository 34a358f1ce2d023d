"""tokred-train: how to train. Data (`tokred_train.data`), the config tree, model building
(tiny or Hugging Face, 4-bit, reduction patch, LoRA), the mixed-task loop, checkpoints and
metrics.

Importing this package is light: the submodules that pull in transformers, peft or
tensorboard load on first use of their names.
"""

from __future__ import annotations

import importlib
from typing import Any

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
    "ModelIO": "families",
    "TrainStep": "train_step",
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
    "evaluate_understanding": "evaluate",
    "evaluate_generation": "evaluate",
    "save_sample_grid": "evaluate_grid",
    "load_run": "evaluate_run",
    "evaluate_run": "evaluate_run",
}

# The public surface is exactly what __getattr__ can load.
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'tokred_train' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
