"""Data for unified training: the embedded shapes set and its detector (`data.shapes`),
real-format loaders, the patch VQ image tokenizer, the pixels of a model's own encoder,
the unified vocabulary, collation into `TokenLayout`s, and the pipeline that turns a data
config into per-task samples with pre-encoded codes (`data.pipeline`).

The image tokenizers of real model families (Janus, Emu3, Chameleon) live in
`tokred_train.families`, which builds on this package."""

from .collate import DEFAULT_SYSTEM_PROMPT, IGNORE_INDEX, EncodedSample, collate, encode_sample
from .formats import (
    LoadedDataset,
    SkippedRecord,
    load_captioned_folder,
    load_llava_conversations,
    load_prompt_image_jsonl,
)
from .images import as_uint8_batch, as_uint8_image, square_resize
from .patch_vq import PatchVQTokenizer
from .pixels import PixelSpec
from .shapes.dataset import (
    COLORS,
    KINDS,
    PALETTE,
    POSITIONS,
    SIZES,
    ShapeSpec,
    build_shapes_dataset,
    caption_for,
    draw_shapes,
    questions_for,
)
from .shapes.detector import (
    ATTRIBUTES,
    Detection,
    check,
    check_scene,
    detect,
    detect_dominant,
    score,
)
from .shapes.samples import shapes_samples
from .vocab import SPECIAL_TOKENS, UnifiedVocab, collect_texts

__all__ = [
    "PixelSpec",
    "ATTRIBUTES",
    "COLORS",
    "DEFAULT_SYSTEM_PROMPT",
    "Detection",
    "EncodedSample",
    "IGNORE_INDEX",
    "KINDS",
    "LoadedDataset",
    "PALETTE",
    "POSITIONS",
    "PatchVQTokenizer",
    "SIZES",
    "SPECIAL_TOKENS",
    "ShapeSpec",
    "SkippedRecord",
    "UnifiedVocab",
    "as_uint8_batch",
    "as_uint8_image",
    "build_shapes_dataset",
    "caption_for",
    "check",
    "check_scene",
    "collate",
    "collect_texts",
    "detect",
    "detect_dominant",
    "draw_shapes",
    "encode_sample",
    "load_captioned_folder",
    "load_llava_conversations",
    "load_prompt_image_jsonl",
    "questions_for",
    "score",
    "shapes_samples",
    "square_resize",
]
