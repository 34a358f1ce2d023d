"""The model families tokred trains out of the box: Janus, Emu3 and Chameleon.

Each factory pairs the model's own tokenizer (from the local folder) with its own VQ
model (inside the loaded weights), so a run writes sequences the way the family was
pretrained:

- Janus(-Pro): understanding images are `image_token` placeholders filled from SigLIP
  pixels (`num_image_tokens` of them, 576 for the released models), bracketed by
  `<begin_of_image>` / `<end_of_image>`; generated images are the VQ codes themselves,
  embedded by `generation_embeddings` and predicted by `generation_head` (loss path
  "janus").
- Emu3: an image, read or written, is `<|image start|>` "rows*cols" `<|image token|>`,
  then its visual tokens row by row, each row ended by `<|extra_200|>`, then
  `<|extra_201|>` `<|image end|>` (what Emu3Processor and `get_image_tokens` produce).
- Chameleon: `<racm3:break>`, the image's BPE visual tokens, `<eoss>`.
Emu3 and Chameleon train through the plain causal-LM loss over their one vocabulary.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokred_core import TokredError
from torch import nn

from .config import DataConfig
from .data.hf_vocab import HFTokenizerVocab, load_local_tokenizer
from .data.hf_vq_chameleon import ChameleonImageTokenizer
from .data.hf_vq_emu3 import Emu3ImageTokenizer
from .data.hf_vq_janus import JanusImageTokenizer, janus_pixel_spec
from .families import ModelIO, register_model_io

__all__ = ["janus_io", "emu3_io", "chameleon_io"]

EMU3_IMAGE_WRAPPER = "<|image token|>"
EMU3_END_OF_FRAME = "<|extra_201|>"


def _need_model(model: nn.Module | None, family: str) -> nn.Module:
    if model is None:
        raise TokredError(
            f"the {family} image tokenizer lives inside the model's weights: load the model "
            "first and pass it to build_model_io"
        )
    return model


def _token_id(tokenizer, token: str, family: str) -> int:
    ids = tokenizer.convert_tokens_to_ids([token])
    if not ids or ids[0] is None or ids[0] == tokenizer.unk_token_id:
        raise TokredError(f"the {family} tokenizer has no {token!r} token")
    return int(ids[0])


def _code_ids(vq) -> torch.Tensor:
    """(codebook_size,) the LM id of each code, from the model's own vocabulary mapping."""
    img2bpe = vq.vocabulary_mapping.img2bpe
    return torch.tensor([int(img2bpe[c]) for c in range(vq.codebook_size)])


def janus_io(model_dir: Path, data: DataConfig, model: nn.Module | None) -> ModelIO:
    model = _need_model(model, "janus")
    config = model.config
    vq = JanusImageTokenizer.from_model(model)
    tokenizer = load_local_tokenizer(model_dir)
    placeholder = int(config.image_token_id)
    num_vision = int(config.vision_config.num_image_tokens)

    def understood(codes: torch.Tensor) -> torch.Tensor:
        # The codes are not read: SigLIP features of the pixels replace the placeholders.
        return torch.full((num_vision,), placeholder, dtype=torch.long)

    vocab = HFTokenizerVocab(
        tokenizer,
        image_ids=lambda codes: codes,
        input_image_ids=understood,
        boi_token="<begin_of_image>",
        eoi_token="<end_of_image>",
        name="janus",
        code_ids=torch.arange(vq.codebook_size),  # generation_head's outputs are the codes
        image_template=[None] * vq.num_tokens_per_image,
    )
    pixels = janus_pixel_spec(int(config.vision_config.image_size))
    return ModelIO(vocab, vq, understanding_pixels=pixels, loss_path="janus")


def emu3_io(model_dir: Path, data: DataConfig, model: nn.Module | None) -> ModelIO:
    model = _need_model(model, "emu3")
    vq = Emu3ImageTokenizer.from_model(model, image_size=data.image_size)
    if not vq.has_vocabulary:
        raise TokredError("the Emu3 model's config has no vocabulary_map for its visual tokens")
    tokenizer = load_local_tokenizer(model_dir)
    rows, cols = vq.grid
    prefix = [
        *tokenizer(f"{rows}*{cols}", add_special_tokens=False)["input_ids"],
        _token_id(tokenizer, EMU3_IMAGE_WRAPPER, "emu3"),
    ]
    suffix = [_token_id(tokenizer, EMU3_END_OF_FRAME, "emu3")]

    def image_ids(codes: torch.Tensor) -> torch.Tensor:
        body = vq.codes_to_token_ids(codes[None], row_ends=True)[0]
        return torch.cat([torch.tensor(prefix), body, torch.tensor(suffix)])

    row = [None] * cols + [vq.row_end_token_id]
    vocab = HFTokenizerVocab(
        tokenizer,
        image_ids=image_ids,
        boi_token="<|image start|>",
        eoi_token="<|image end|>",
        name="emu3",
        code_ids=_code_ids(vq),
        image_template=[*prefix, *(row * rows), *suffix],
    )
    return ModelIO(vocab, vq)


def chameleon_io(model_dir: Path, data: DataConfig, model: nn.Module | None) -> ModelIO:
    model = _need_model(model, "chameleon")
    vq = ChameleonImageTokenizer.from_model(model, image_size=data.image_size)
    if not vq.has_vocabulary:
        raise TokredError("the Chameleon model's config has no vocabulary_map for its image tokens")
    tokenizer = load_local_tokenizer(model_dir)
    vocab = HFTokenizerVocab(
        tokenizer,
        image_ids=lambda codes: vq.codes_to_token_ids(codes[None])[0],
        boi_token="<racm3:break>",
        eoi_token="<eoss>",
        name="chameleon",
        code_ids=_code_ids(vq),
        image_template=[None] * vq.num_tokens_per_image,
    )
    return ModelIO(vocab, vq)


register_model_io("janus", janus_io)
register_model_io("emu3", emu3_io)
register_model_io("chameleon", chameleon_io)
