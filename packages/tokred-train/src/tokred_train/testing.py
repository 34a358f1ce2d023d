"""Tiny local stand-ins for real model folders, for tests and smoke runs of recipes.

Why: nothing can be downloaded here, yet `model.kind: hf` runs read a Hugging Face folder
(config.json, weights, tokenizer files). These builders write that folder for a real
transformers architecture at toy size, with a word-level tokenizer covering the texts a
test trains on, so a recipe runs end to end (load, 4-bit, patch, LoRA, data, loss) in
seconds. The weights are random: stand-ins check plumbing, never quality.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "save_word_tokenizer",
    "save_tiny_janus",
    "save_tiny_emu3",
    "save_tiny_chameleon",
    "words_of",
    "shapes_texts",
    "snapshot_parameters",
    "changed_parameters",
]

_WORD = re.compile(r"\w+|[^\w\s]")


def shapes_texts(num_train: int, num_val: int, seed: int = 0, max_shapes: int = 1) -> list[str]:
    """Every text of an embedded shapes set (both splits, and the default system prompt):
    what a stand-in's tokenizer must cover to train and evaluate on that set."""
    from .data import DEFAULT_SYSTEM_PROMPT, build_shapes_dataset, collect_texts

    ds = build_shapes_dataset(
        num_train=num_train, num_val=num_val, seed=seed, image_size=16, max_shapes=max_shapes
    )
    return collect_texts(ds["train"], extra=[DEFAULT_SYSTEM_PROMPT]) + collect_texts(
        ds["validation"]
    )


def words_of(texts: Iterable[str]) -> list[str]:
    """The distinct words and punctuation marks of `texts`, sorted."""
    return sorted({w for t in texts for w in _WORD.findall(t)})


def save_word_tokenizer(
    folder: str | Path,
    words: Sequence[str],
    specials: Sequence[str],
    extra_special_tokens: dict[str, str] | None = None,
    **roles: str,
) -> Any:
    """A word-level fast tokenizer (ids: specials first, then words) saved into `folder`.

    roles: pad_token, bos_token, eos_token, unk_token (each one of `specials`).
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(dict.fromkeys([*specials, *words]))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=roles.get("unk_token", specials[0])))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, extra_special_tokens=extra_special_tokens or {}, **roles
    )
    tokenizer.add_special_tokens({"additional_special_tokens": list(specials)})
    tokenizer.save_pretrained(str(folder))
    return tokenizer


def _save(model: torch.nn.Module, folder: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save_pretrained(str(folder))
    return folder


def _text_config(tokenizer: Any, layers: int, max_positions: int) -> dict[str, Any]:
    """The language model of every stand-in: a Llama-style stack at hidden 32 (GQA 4:2)."""
    return dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )


def snapshot_parameters(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every parameter, by name (to see later which ones training moved)."""
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def changed_parameters(before: dict[str, torch.Tensor], model: torch.nn.Module) -> set[str]:
    """Names of the parameters of `model` that differ from the snapshot `before`."""
    after = dict(model.named_parameters())
    return {n for n, p in before.items() if not torch.equal(p, after[n].detach())}


JANUS_SPECIALS = (
    "<pad>",
    "<bos>",
    "<eos>",
    "<unk>",
    "<begin_of_image>",
    "<end_of_image>",
    "<image_placeholder>",
)


def save_tiny_janus(
    folder: str | Path, texts: Iterable[str], layers: int = 4, seed: int = 0
) -> Path:
    """JanusForConditionalGeneration at hidden 32 with its tokenizer: SigLIP reads 16 px
    images as 16 tokens; the VQ writes 8 px images as 16 codes from a codebook of 32."""
    from transformers import JanusConfig, JanusForConditionalGeneration

    folder = Path(folder)
    tok = save_word_tokenizer(
        folder,
        words_of(texts),
        JANUS_SPECIALS,
        {
            "image_token": "<image_placeholder>",
            "boi_token": "<begin_of_image>",
            "eoi_token": "<end_of_image>",
        },
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
    )
    config = JanusConfig(
        text_config=dict(model_type="llama", **_text_config(tok, layers, 256)),
        # The VQ grid is vision image_size // patch_size = 4 x 4.
        vision_config=dict(
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=16,
            patch_size=4,
            projection_dim=32,
            mlp_ratio=2.0,
            num_image_tokens=16,
        ),
        vq_config=dict(
            embed_dim=8,
            num_embeddings=32,
            latent_channels=32,
            base_channels=32,
            channel_multiplier=[1, 2],
            num_res_blocks=1,
            projection_dim=32,
            image_token_embed_dim=32,
            num_hidden_layers=1,
        ),
        image_token_id=tok.convert_tokens_to_ids("<image_placeholder>"),
    )
    torch.manual_seed(seed)
    return _save(JanusForConditionalGeneration(config), folder)


EMU3_SPECIALS = (
    "<|endoftext|>",
    "<|extra_203|>",
    "<|extra_204|>",
    "<unk>",
    "<|image start|>",
    "<|image end|>",
    "<|image token|>",
    "<|extra_200|>",
    "<|extra_201|>",
    "<image>",
)
EMU3_CODES = 8


def save_tiny_emu3(
    folder: str | Path, texts: Iterable[str], layers: int = 4, seed: int = 0
) -> Path:
    """Emu3ForConditionalGeneration at hidden 32 with its tokenizer: its VQ writes an image
    as a grid of codes (spatial factor 2) from a codebook of 8, each code a visual token
    of the LM vocabulary."""
    from transformers import Emu3Config, Emu3ForConditionalGeneration

    folder = Path(folder)
    visual = [f"<|visual token{i:06d}|>" for i in range(EMU3_CODES)]
    words = [*words_of(texts), *"0123456789", "*"]
    tok = save_word_tokenizer(
        folder,
        words,
        (*EMU3_SPECIALS, *visual),
        {"image_token": "<image>", "boi_token": "<|image start|>", "eoi_token": "<|image end|>"},
        pad_token="<|endoftext|>",
        bos_token="<|extra_203|>",
        eos_token="<|extra_204|>",
        unk_token="<unk>",
    )
    vocabulary_map = {t: tok.convert_tokens_to_ids(t) for t in (*EMU3_SPECIALS, *visual)}
    config = Emu3Config(
        vocabulary_map=vocabulary_map,
        text_config=_text_config(tok, layers, 512),
        vq_config=dict(
            codebook_size=EMU3_CODES,
            embed_dim=4,
            latent_channels=4,
            base_channels=32,
            channel_multiplier=[1, 2],
            num_res_blocks=1,
            attn_resolutions=[],
            hidden_size=64,
            num_attention_heads=1,
            temporal_downsample_factor=2,
        ),
    )
    torch.manual_seed(seed)
    return _save(Emu3ForConditionalGeneration(config), folder)


CHAMELEON_SPECIALS = ("<pad>", "<s>", "</s>", "<unk>", "<racm3:break>", "<eoss>", "<image>")
CHAMELEON_CODES = 16


def _chameleon_letters(code: int) -> str:
    """Chameleon spells a code's digits as letters: 12 -> 'BC'."""
    return "".join(chr(ord("A") + int(d)) for d in str(code))


def save_tiny_chameleon(
    folder: str | Path, texts: Iterable[str], layers: int = 4, seed: int = 0
) -> Path:
    """ChameleonForConditionalGeneration at hidden 32 with its tokenizer: its VQ writes a
    16 px image as 8 x 8 codes from a codebook of 16, each an `IMGIMG<letters>Z` token."""
    from transformers import ChameleonConfig, ChameleonForConditionalGeneration

    folder = Path(folder)
    visual = [f"IMGIMG{_chameleon_letters(i)}Z" for i in range(CHAMELEON_CODES)]
    tok = save_word_tokenizer(
        folder,
        words_of(texts),
        (*CHAMELEON_SPECIALS, *visual),
        {"image_token": "<image>", "boi_token": "<racm3:break>", "eoi_token": "<eoss>"},
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
    )
    config = ChameleonConfig(
        **_text_config(tok, layers, 256),
        vocabulary_map={t: tok.convert_tokens_to_ids(t) for t in (*CHAMELEON_SPECIALS, *visual)},
        vq_config=dict(
            embed_dim=8,
            num_embeddings=CHAMELEON_CODES,
            latent_channels=8,
            resolution=16,
            base_channels=32,
            channel_multiplier=[1, 2],
            num_res_blocks=1,
            attn_resolutions=None,
        ),
    )
    torch.manual_seed(seed)
    return _save(ChameleonForConditionalGeneration(config), folder)
