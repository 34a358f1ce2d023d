"""The data pipeline: data set -> image tokenizer -> vocabulary -> per-task samples with
pre-encoded codes.

The embedded default (model.kind: tiny) needs no hub: `data.kind: shapes` builds the
synthetic set in memory, the patch VQ codebook is fitted on the training images and the
unified vocabulary is built from the texts. The real formats (llava, jsonl, folder) are
loaded by `tokred_train.data`'s loaders and every image is centre-cropped and resized to
data.image_size. A Hugging Face model (model.kind: hf) brings its own vocabulary and image
tokenizer: a `ModelIO` built by `tokred_train.families` and handed in by
`tokred_train.built_run`; the same code then only encodes the images with it.
Deterministic given the data config.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokred_core import TokredError

from ..config import DataConfig, split_data_path
from .collate import DEFAULT_SYSTEM_PROMPT
from .formats import load_captioned_folder, load_llava_conversations, load_prompt_image_jsonl
from .image_source import ImageSource, LazyPixels
from .model_io import ModelIO
from .patch_vq import PatchVQTokenizer
from .protocols import ImageTokenizer, TokenVocab
from .shapes.dataset import build_shapes_dataset
from .shapes.samples import shapes_samples
from .training_data import TaskSamples, TrainData
from .vocab import UnifiedVocab, collect_texts

__all__ = ["build_embedded_data", "build_shapes_data", "build_real_format_data", "shapes_dataset"]

#: A family's ModelIO, or (vocab, image tokenizer) of a saved embedded run.
IOArg = ModelIO | tuple[TokenVocab, ImageTokenizer] | None

log = logging.getLogger(__name__)

_TEXT_FIELDS = ("prompt", "question", "answer")


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
    rows: list[dict[str, Any]], image_codes: torch.Tensor, pixels: torch.Tensor | None, split: str
) -> dict[str, TaskSamples]:
    """Per-task samples of a shapes split: each row takes its image's codes and, when the
    model reads understanding images through its own encoder, its image's fitted pixels
    (`pixels`: one per image, fitted once however many questions share the image)."""
    out = {}
    for task in ("understanding", "generation"):
        mine = [r for r in rows if r["task"] == task]
        recs = [{k: r[k] for k in ("task", *_TEXT_FIELDS) if k in r} for r in mine]
        index = torch.tensor([r["image_index"] for r in mine], dtype=torch.long)
        task_pixels = pixels[index] if pixels is not None and task == "understanding" else None
        sources = [f"{task} sample {i} of the shapes {split} split" for i in range(len(recs))]
        out[task] = TaskSamples(task, recs, image_codes[index], task_pixels, sources)
    return out


def _with_io(data: TrainData, io: ModelIO | None) -> TrainData:
    if data.max_length is not None:  # every sample, before the first step
        data.check_lengths(
            data.max_length,
            f"data.max_length={data.max_length}",
            "raise data.max_length or shorten its text",
        )
    if io is not None:
        data.understanding_pixels = io.understanding_pixels
        data.loss_path = io.loss_path
    return data


def shapes_dataset(cfg: DataConfig):
    """The shapes set's splits (a datasets.DatasetDict) as `cfg` describes them."""
    return build_shapes_dataset(
        num_train=cfg.num_train,
        num_val=cfg.num_val,
        seed=cfg.seed,
        image_size=cfg.image_size,
        max_shapes=cfg.max_shapes,
        task_split=cfg.task_split,
    )


def build_shapes_data(cfg: DataConfig, io: ModelIO | None = None) -> TrainData:
    """The synthetic shapes set: both tasks from every image."""
    ds = shapes_dataset(cfg)
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
        pixels = None
        if io is not None and io.understanding_pixels is not None:
            spec = io.understanding_pixels
            pixels = torch.from_numpy(np.stack([spec.fit_image(im) for im in pil_images]))
        splits[split] = _split_by_task(rows, image_codes, pixels, split)
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
    bad = {"on_bad_image": cfg.on_bad_image, "on_bad_record": cfg.on_bad_record}
    if kind == "llava":
        if cfg.image_root is None:
            root = Path(path).parent
        else:
            root = Path(cfg.image_root)
        return load_llava_conversations(path, root, **bad)
    if kind == "jsonl":
        return load_prompt_image_jsonl(path, cfg.image_root, **bad)
    return load_captioned_folder(path, **bad)


#: Images encoded per VQ call while building the data (bounds the pixels held at once).
ENCODE_CHUNK = 64
#: At most this many training images fit the embedded patch VQ codebook (k-means needs a
#: sample of the patches, not every image of a large set).
VQ_FIT_IMAGES = 4096


def _encode(vq: ImageTokenizer, source: ImageSource, rows: list[int]) -> torch.Tensor:
    """(len(rows), T) int32 codes, encoding ENCODE_CHUNK images at a time."""
    codes = torch.zeros((len(rows), vq.num_tokens_per_image), dtype=torch.int32)
    for start in range(0, len(rows), ENCODE_CHUNK):
        chunk = rows[start : start + ENCODE_CHUNK]
        codes[start : start + len(chunk)] = vq.encode(source.images(chunk)).to(torch.int32)
    return codes


def _real_split(
    rows: list[dict[str, Any]],
    sources: list[str],
    index: list[int],
    vq: ImageTokenizer,
    source: ImageSource,
    io: ModelIO | None,
) -> dict[str, TaskSamples]:
    """Per-task samples of the records `index`: generation targets (and understanding
    inputs, unless the model reads them as pixels) encoded now, pixels read per batch."""
    spec = io.understanding_pixels if io is not None else None
    out = {}
    for task in ("understanding", "generation"):
        mine = [i for i in index if rows[i]["task"] == task]
        recs = [dict(rows[i]) for i in mine]
        names = [sources[i] for i in mine]
        if spec is not None and task == "understanding":
            codes = torch.zeros((len(mine), 0), dtype=torch.int32)
            out[task] = TaskSamples(task, recs, codes, LazyPixels(source, mine, spec), names)
        else:
            out[task] = TaskSamples(task, recs, _encode(vq, source, mine), sources=names)
    return out


def build_real_format_data(cfg: DataConfig, io: ModelIO | None = None) -> TrainData:
    """LLaVA / prompt-image JSONL / captioned folder data, images read from their files in
    chunks (see image_source.py): only codes and file references stay in memory."""
    rows: list[dict[str, Any]] = []
    sources: list[str] = []  # where each row came from, for errors
    source = ImageSource(cfg.image_size)
    skipped = 0
    for entry in cfg.paths:
        kind, path = split_data_path(entry, cfg.kind)
        loaded = _load_source(kind, path, cfg)
        skipped += loaded.num_skipped
        text = loaded.dataset.select_columns(
            [c for c in ("task", *_TEXT_FIELDS) if c in loaded.dataset.column_names]
        )
        rows.extend(dict(rec) for rec in text)  # no image is decoded here
        sources.extend(loaded.labels)
        source.add(loaded.dataset)
    if not rows:
        raise TokredError(f"data.paths {cfg.paths} hold no usable records")
    # Hold out the last num_val samples of each task, after a seeded shuffle.
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(rows))
    train_idx: list[int] = []
    val_idx: list[int] = []
    for task in ("understanding", "generation"):
        mine = [int(i) for i in order if rows[i]["task"] == task]
        n_val = min(cfg.num_val, max(len(mine) - 1, 0))
        train_idx += mine[: len(mine) - n_val]
        val_idx += mine[len(mine) - n_val :]
    if io is None:
        fit = sorted(train_idx)
        if len(fit) > VQ_FIT_IMAGES:
            fit = sorted(rng.choice(fit, VQ_FIT_IMAGES, replace=False).tolist())
        vq = PatchVQTokenizer.fit(
            source.images(fit),
            codebook_size=cfg.codebook_size,
            patch_size=cfg.patch_size,
            seed=cfg.seed,
        )
        texts = [_system_prompt(cfg)] + [r[k] for r in rows for k in _TEXT_FIELDS if r.get(k)]
        vocab = UnifiedVocab.build(texts, codebook_size=vq.codebook_size)
    else:
        vocab, vq = io.vocab, io.image_tokenizer
    train = _real_split(rows, sources, train_idx, vq, source, io)
    val = _real_split(rows, sources, val_idx, vq, source, io)
    if skipped:
        log.warning("left out %d bad records (data.on_bad_image / on_bad_record=skip)", skipped)
    info = {
        "kind": cfg.kind,
        "paths": list(cfg.paths),
        "records": len(rows),
        "skipped": skipped,
        "tokens_per_image": vq.num_tokens_per_image,
        "vocab_size": vocab.vocab_size,
    }
    return _with_io(TrainData(vocab, vq, train, val, _system_prompt(cfg), cfg.max_length, info), io)
