"""tokred-train: how to train, in rooms (each a subpackage, one concern):

    config/    the config tree (schema) and its YAML + override loader
    data/      the data pipeline, formats, collation, vocabularies, patch VQ, pixels;
               data/shapes/ the embedded synthetic set and its detector
    families/  Hugging Face model families (Janus, Emu3, Chameleon) behind a leaf registry
    model/     model building: tiny or Hugging Face, 4-bit, reduction patch, LoRA
    built_run  one way to build a run's data and model, for training, eval and analysis
    run/       the training loop, its step, losses, sampler, optimizer, checkpoints, logs
    eval/      scoring, decoding, allocation, sample grids, a whole run's evaluation

Imports point down that list: eval and run use built_run, model, families, data, config;
nothing below imports anything above it.

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
    "TrainData": "data.training_data",
    "TaskSamples": "data.training_data",
    "ImageTokenizer": "data.protocols",
    "TokenVocab": "data.protocols",
    "PixelSpec": "data.pixels",
    "build_embedded_data": "data.pipeline",
    "MixedBatchSampler": "run.sampler",
    "ModelIO": "families",
    "register_model_io": "families",
    "build_model_io": "families",
    "HFImageTokenizer": "families",
    "JanusImageTokenizer": "families",
    "Emu3ImageTokenizer": "families",
    "ChameleonImageTokenizer": "families",
    "IMAGE_TOKENIZERS": "families",
    "image_tokenizer_for": "families",
    "BuiltModel": "model.builder",
    "build_model": "model.builder",
    "apply_lora": "model.lora",
    "quantize_linears_4bit_": "model.quantize",
    "BuiltRun": "built_run",
    "build_run": "built_run",
    "build_train_data": "built_run",
    "TrainStep": "run.step",
    "train": "run.loop",
    "RunResult": "run.loop",
    "save_checkpoint": "run.checkpoint",
    "load_checkpoint": "run.checkpoint",
    "find_latest_checkpoint": "run.checkpoint",
    "DistInfo": "run.distributed",
    "dist_info": "run.distributed",
    "evaluate_understanding": "eval.understanding",
    "evaluate_generation": "eval.generation",
    "save_sample_grid": "eval.grid",
    "LoadedRun": "eval.run",
    "load_run": "eval.run",
    "evaluate_run": "eval.run",
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
