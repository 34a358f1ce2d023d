"""Hugging Face model families: what a `model.kind: hf` run needs besides the weights.

One module per family, each holding its VQ wrapper, its pixel spec and its `ModelIO`
factory, registered with the leaf `registry` when this package is imported:

- Janus(-Pro) (`janus`): understanding images are `image_token` placeholders filled from
  SigLIP pixels (`num_image_tokens` of them, 576 for the released models), bracketed by
  `<begin_of_image>` / `<end_of_image>`; generated images are the VQ codes themselves,
  embedded by `generation_embeddings` and predicted by `generation_head` (loss path
  "janus").
- Emu3 (`emu3`): an image, read or written, is `<|image start|>` "rows*cols"
  `<|image token|>`, then its visual tokens row by row, each row ended by `<|extra_200|>`,
  then `<|extra_201|>` `<|image end|>` (what Emu3Processor and `get_image_tokens` produce).
- Chameleon (`chameleon`): `<racm3:break>`, the image's BPE visual tokens, `<eoss>`.

Emu3 and Chameleon train through the plain causal-LM loss over their one vocabulary.
Shared parts: `base` (the VQ wrapper protocol: input conversion, batching, eval mode,
nearest-code search) and `tokenizer` (the model's own tokenizer as a `TokenVocab`).
"""

from __future__ import annotations

from . import chameleon, emu3, janus  # noqa: F401  (each registers its factory)
from .base import HFImageTokenizer
from .chameleon import ChameleonImageTokenizer, chameleon_io
from .emu3 import Emu3ImageTokenizer, emu3_io
from .image_tokenizers import IMAGE_TOKENIZERS, image_tokenizer_for
from .janus import JanusImageTokenizer, janus_io
from .registry import (
    LOSS_PATHS,
    ModelIO,
    ModelIOFactory,
    build_model_io,
    check_trainable,
    hf_model_type,
    register_model_io,
    registered_model_io,
)
from .tokenizer import HFTokenizerVocab, load_local_tokenizer

__all__ = [
    "IMAGE_TOKENIZERS",
    "LOSS_PATHS",
    "ChameleonImageTokenizer",
    "Emu3ImageTokenizer",
    "HFImageTokenizer",
    "HFTokenizerVocab",
    "JanusImageTokenizer",
    "ModelIO",
    "ModelIOFactory",
    "build_model_io",
    "chameleon_io",
    "check_trainable",
    "emu3_io",
    "hf_model_type",
    "image_tokenizer_for",
    "janus_io",
    "load_local_tokenizer",
    "register_model_io",
    "registered_model_io",
]
