"""The data pipeline: data set -> image tokenizer -> vocabulary -> per-task samples with
pre-encoded codes.

The embedded default (model.kind: tiny) needs no hub: `data.kind: shapes` builds the
synthetic set in memory, the patch VQ codebook is fitted on the training images and the
unified vocabulary is built from the texts. The real formats (llava, jsonl, folder) are
loaded by `tokred_train.data`'s loaders and every image is centre-cropped and resized to
data.image_size. A Hugging Face model (model.kind: hf) brings its own vocabulary and image
tokenizer (`tokred_train.families`); the same code then only encodes the images with it.
Deterministic given the data config.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokred_core import TokredError
from torch import nn

from .config import DataConfig, TrainConfig, split_data_path
from .data import (
    DEFAULT_SYSTEM_PROMPT,
    PatchVQTokenizer,
    UnifiedVocab,
    build_shapes_dataset,
    collect_texts,
    load_captioned_folder,
    load_llava_conversations,
    load_prompt_image_jsonl,
    shapes_samples,
    square_resize,
)
from .families import ModelIO, build_model_io
from .protocols import ImageTokenizer, TokenVocab
from .training_data import TaskSamples, TrainData

__all__ = ["build_train_data", "build_embedded_data", "build_shapes_data", "build_real_format_data"]

#: A family's ModelIO, or (vocab, image tokenizer) of a saved embedded run.
IOArg = ModelIO | tuple[TokenVocab, ImageTokenizer] | None

log = logging.getLogger(__name__)

_TEXT_FIELDS = ("prompt", "question", "answer")


def build_train_data(config: TrainConfig, model: nn.Module | None = None) -> TrainData:
    """The data of a run: the embedded pipeline for the tiny model, the model's own
    vocabulary and image tokenizer for a Hugging Face model (`model`: the loaded model,
    handed to the family's factory in tokred_train.families)."""
    if config.model.kind == "hf":
        return build_embedded_data(
            config.data, build_model_io(config.model.path, config.data, model)
        )
    return build_embedded_data(config.data)


def _system_prompt(cfg: DataConfig) -> str:
    return DEFAULT_SYSTEM_PROMPT if cfg.system_prompt is None else cfg.system_prompt


def build_embedded_data(cfg: DataConfig, io: IOArg = None) -> TrainData:
    """Shapes or real-format data; `io`: the model family's ModelIO, a saved run's
    (vocab, image tokenizer), or None to fit both."""
    if isinstance(io, tuple):
        io = ModelIO(*io)
    if cfg.kind == "shapes":
        return build_shapes_data(cfg, io)
    return build_real_format_data(cfg, io)


def _split_by_task(
    rows: list[dict[str, Any]], codes: torch.Tensor, images: Any, io: ModelIO | None
) -> dict[str, TaskSamples]:
    """Per-task samples; understanding samples keep their pixels when the model reads
    them through its own encoder (`images[i]`: row i's image, any form PixelSpec fits)."""
    spec = io.understanding_pixels if io is not None else None
    out = {}
    for task in ("understanding", "generation"):
        keep = [i for i, r in enumerate(rows) if r["task"] == task]
        recs = [{k: rows[i][k] for k in ("task", *_TEXT_FIELDS) if k in rows[i]} for i in keep]
        pixels = None
        if spec is not None and task == "understanding":
            fitted = [spec.fit_image(images[i]) for i in keep]
            shape = (0, spec.height, spec.width, 3)
            pixels = (
                torch.from_numpy(np.stack(fitted))
                if fitted
                else torch.zeros(shape, dtype=torch.uint8)
            )
        out[task] = TaskSamples(task, recs, codes[keep] if keep else codes[:0], pixels)
    return out


def _with_io(data: TrainData, io: ModelIO | None) -> TrainData:
    if io is not None:
        data.understanding_pixels = io.understanding_pixels
        data.loss_path = io.loss_path
    return data


def build_shapes_data(cfg: DataConfig, io: ModelIO | None = None) -> TrainData:
    """The synthetic shapes set: both tasks from every image."""
    ds = build_shapes_dataset(
        num_train=cfg.num_train,
        num_val=cfg.num_val,
        seed=cfg.seed,
        image_size=cfg.image_size,
        max_shapes=cfg.max_shapes,
    )
    if io is None:
        vq = PatchVQTokenizer.fit(
            ds["train"]["image"],
            codebook_size=cfg.codebook_size,
            patch_size=cfg.patch_size,
            seed=cfg.seed,
        )
        texts = collect_texts(ds["train"], extra=[_system_prompt(cfg)])
        if len(ds["validation"]):
            texts += collect_texts(ds["validation"])
        vocab = UnifiedVocab.build(texts, codebook_size=vq.codebook_size)
    else:
        vocab, vq = io.vocab, io.image_tokenizer
    splits = {}
    for split in ("train", "validation"):
        part = ds[split]
        if len(part) == 0:
            splits[split] = {
                t: TaskSamples.empty(t, vq.num_tokens_per_image)
                for t in ("understanding", "generation")
            }
            continue
        pil_images = part["image"]
        image_codes = vq.encode(pil_images)
        rows = shapes_samples(part, questions_per_image=cfg.questions_per_image).to_list()
        codes = image_codes[[r["image_index"] for r in rows]]
        row_images = [pil_images[r["image_index"]] for r in rows]
        splits[split] = _split_by_task(rows, codes, row_images, io)
    info = {
        "kind": "shapes",
        "train_images": len(ds["train"]),
        "val_images": len(ds["validation"]),
        "tokens_per_image": vq.num_tokens_per_image,
        "vocab_size": vocab.vocab_size,
    }
    data = TrainData(
        vocab, vq, splits["train"], splits["validation"], _system_prompt(cfg), cfg.max_length, info
    )
    return _with_io(data, io)


def _load_source(kind: str, path: str, cfg: DataConfig):
    if kind == "llava":
        if cfg.image_root is None:
            root = Path(path).parent
        else:
            root = Path(cfg.image_root)
        return load_llava_conversations(path, root, on_bad_image=cfg.on_bad_image)
    if kind == "jsonl":
        return load_prompt_image_jsonl(path, cfg.image_root, on_bad_image=cfg.on_bad_image)
    return load_captioned_folder(path, on_bad_image=cfg.on_bad_image)


def build_real_format_data(cfg: DataConfig, io: ModelIO | None = None) -> TrainData:
    """LLaVA / prompt-image JSONL / captioned folder data for the tiny model."""
    rows: list[dict[str, Any]] = []
    images: list[np.ndarray] = []
    skipped = 0
    for entry in cfg.paths:
        kind, path = split_data_path(entry, cfg.kind)
        loaded = _load_source(kind, path, cfg)
        skipped += loaded.num_skipped
        for rec in loaded.dataset:
            images.append(square_resize(rec["image"], cfg.image_size))
            rows.append({k: rec[k] for k in ("task", *_TEXT_FIELDS) if k in rec})
    if not rows:
        raise TokredError(f"data.paths {cfg.paths} hold no usable records")
    # Hold out the last num_val samples of each task, after a seeded shuffle.
    order = np.random.default_rng(cfg.seed).permutation(len(rows))
    train_idx: list[int] = []
    val_idx: list[int] = []
    for task in ("understanding", "generation"):
        mine = [int(i) for i in order if rows[i]["task"] == task]
        n_val = min(cfg.num_val, max(len(mine) - 1, 0))
        train_idx += mine[: len(mine) - n_val]
        val_idx += mine[len(mine) - n_val :]
    if io is None:
        vq = PatchVQTokenizer.fit(
            np.stack([images[i] for i in train_idx]),
            codebook_size=cfg.codebook_size,
            patch_size=cfg.patch_size,
            seed=cfg.seed,
        )
        texts = [_system_prompt(cfg)] + [r[k] for r in rows for k in _TEXT_FIELDS if r.get(k)]
        vocab = UnifiedVocab.build(texts, codebook_size=vq.codebook_size)
    else:
        vocab, vq = io.vocab, io.image_tokenizer
    all_codes = vq.encode(np.stack(images))
    train = _split_by_task(
        [rows[i] for i in train_idx], all_codes[train_idx], [images[i] for i in train_idx], io
    )
    val = _split_by_task(
        [rows[i] for i in val_idx], all_codes[val_idx], [images[i] for i in val_idx], io
    )
    if skipped:
        log.warning("left out %d bad records (data.on_bad_image=skip)", skipped)
    info = {
        "kind": cfg.kind,
        "paths": list(cfg.paths),
        "records": len(rows),
        "skipped": skipped,
        "tokens_per_image": vq.num_tokens_per_image,
        "vocab_size": vocab.vocab_size,
    }
    return _with_io(TrainData(vocab, vq, train, val, _system_prompt(cfg), cfg.max_length, info), io)
