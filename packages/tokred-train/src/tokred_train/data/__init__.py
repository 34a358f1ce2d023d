"""Data for unified training: the embedded shapes set, real-format loaders, the patch VQ
image tokenizer, the unified vocabulary, collation into `TokenLayout`s, and the
deterministic shapes detector used to score generated images."""

from .collate import DEFAULT_SYSTEM_PROMPT, IGNORE_INDEX, EncodedSample, collate, encode_sample
from .detector import ATTRIBUTES, Detection, check, check_scene, detect, detect_dominant, score
from .formats import (
    LoadedDataset,
    SkippedRecord,
    load_captioned_folder,
    load_llava_conversations,
    load_prompt_image_jsonl,
)
from .hf_vq import (
    IMAGE_TOKENIZERS,
    ChameleonImageTokenizer,
    Emu3ImageTokenizer,
    HFImageTokenizer,
    JanusImageTokenizer,
    PixelSpec,
    image_tokenizer_for,
)
from .images import as_uint8_batch, as_uint8_image, square_resize
from .samples import shapes_samples
from .shapes import (
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
from .vocab import SPECIAL_TOKENS, UnifiedVocab, collect_texts
from .vq import PatchVQTokenizer

__all__ = [
    "IMAGE_TOKENIZERS",
    "ChameleonImageTokenizer",
    "Emu3ImageTokenizer",
    "HFImageTokenizer",
    "JanusImageTokenizer",
    "PixelSpec",
    "image_tokenizer_for",
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
