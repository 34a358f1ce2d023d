"""The unified vocabulary of the embedded model: text tokens, then VQ image codes.

Why: a VILA-U-style decoder has one embedding table and one output head over text
tokens *and* image tokens. With no hub tokenizer available, the embedded model builds
its own small text tokenizer from the data, and appends the VQ codebook:

    ids 0..5                      special tokens: pad, bos, eos, unk, boi, eoi
    ids 6..text_vocab_size-1      characters seen in the corpus, then word pieces
    ids text_vocab_size..         image tokens: id = text_vocab_size + VQ code

Text tokenizing is GPT-2-like pre-tokenization without merges: text is split into pieces
(`" ?\\w+"`, `" ?[^\\w\\s]+"`, `"\\s+"`; a word carries its leading space). A piece seen
in the corpus (level="word") is one token; any other piece is spelled character by
character, and a character never seen maps to unk. Decoding concatenates token strings,
so encode/decode round-trips exactly any text whose characters were in the corpus.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from tokred_core import TokredError

from ..atomic import atomic_write_text

__all__ = ["SPECIAL_TOKENS", "TEXT_FIELDS", "UnifiedVocab", "collect_texts"]

SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<bos>", "<eos>", "<unk>", "<boi>", "<eoi>")
#: Record fields that hold text a model reads or writes (see `collect_texts`).
TEXT_FIELDS: tuple[str, ...] = ("caption", "prompt", "question", "answer")
_PIECE = re.compile(r" ?\w+| ?[^\w\s]+|\s+")
_FORMAT = "tokred-unified-vocab"

Level = Literal["char", "word"]


def collect_texts(source: Any, extra: Iterable[str] = ()) -> list[str]:
    """All texts a vocabulary must cover, from a `datasets.Dataset` or a list of records.

    Reads the columns in TEXT_FIELDS and the shapes set's `questions` list; with a
    Dataset only those columns are read, so images are never decoded. `extra` adds texts
    such as the system prompt.
    """
    texts: list[str] = list(extra)
    columns = getattr(source, "column_names", None)
    if columns is not None:  # a datasets.Dataset
        for name in TEXT_FIELDS:
            if name in columns:
                texts.extend(t for t in source[name] if t)
        if "questions" in columns:
            for qas in source["questions"]:
                for qa in qas:
                    texts.extend((qa["question"], qa["answer"]))
        return texts
    for rec in source:
        for name in TEXT_FIELDS:
            if rec.get(name):
                texts.append(rec[name])
        for qa in rec.get("questions") or ():
            texts.extend((qa["question"], qa["answer"]))
    return texts


class UnifiedVocab:
    """Text tokens + begin/end-of-image tokens + VQ image codes, in one id space."""

    def __init__(self, text_tokens: Sequence[str], codebook_size: int, level: Level = "word"):
        tokens = list(text_tokens)
        if tuple(tokens[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise TokredError(f"text tokens must start with the special tokens {SPECIAL_TOKENS}")
        if len(set(tokens)) != len(tokens):
            dup = next(t for t, n in Counter(tokens).items() if n > 1)
            raise TokredError(f"text token {dup!r} appears twice in the vocabulary")
        if codebook_size < 1:
            raise TokredError(f"codebook_size {codebook_size}: need at least 1 image code")
        if level not in ("char", "word"):
            raise TokredError(f"level {level!r}: expected 'char' or 'word'")
        self.tokens = tokens
        self.level: Level = level
        self.codebook_size = int(codebook_size)
        self._ids = {t: i for i, t in enumerate(tokens)}

    # ---- building ---------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        texts: Iterable[str],
        codebook_size: int,
        level: Level = "word",
        min_freq: int = 1,
    ) -> UnifiedVocab:
        """Build from a corpus: all characters, plus (level="word") pieces seen >= min_freq.

        Deterministic: characters and pieces are sorted, never ordered by hash or count.
        """
        if level not in ("char", "word"):
            raise TokredError(f"level {level!r}: expected 'char' or 'word'")
        chars: set[str] = set()
        pieces: Counter[str] = Counter()
        for text in texts:
            chars.update(text)
            if level == "word":
                pieces.update(_PIECE.findall(text))
        tokens = list(SPECIAL_TOKENS)
        tokens += sorted(c for c in chars if c not in SPECIAL_TOKENS)
        have = set(tokens)
        tokens += sorted(p for p, n in pieces.items() if n >= min_freq and p not in have)
        return cls(tokens, codebook_size, level)

    # ---- sizes and special ids --------------------------------------------------------------
    @property
    def text_vocab_size(self) -> int:
        """Number of text ids (specials included); also the id of image code 0."""
        return len(self.tokens)

    @property
    def image_offset(self) -> int:
        return len(self.tokens)

    @property
    def vocab_size(self) -> int:
        """Rows of the embedding table / output head: text tokens + image codes."""
        return len(self.tokens) + self.codebook_size

    def __len__(self) -> int:
        return self.vocab_size

    pad_id = property(lambda self: 0, doc="padding id (never a target)")
    bos_id = property(lambda self: 1, doc="begin of sequence")
    eos_id = property(lambda self: 2, doc="end of a text answer")
    unk_id = property(lambda self: 3, doc="a character never seen in the corpus")
    boi_id = property(lambda self: 4, doc="begin of image")
    eoi_id = property(lambda self: 5, doc="end of image")

    # ---- text -------------------------------------------------------------------------------
    def encode_text(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """Text -> ids. Known pieces are one token; others are spelled; unseen chars -> unk."""
        ids = [self.bos_id] if add_bos else []
        pieces = _PIECE.findall(text) if self.level == "word" else list(text)
        for piece in pieces:
            tid = self._ids.get(piece)
            if tid is not None and tid >= len(SPECIAL_TOKENS):
                ids.append(tid)
            else:
                ids.extend(self._ids.get(c, self.unk_id) for c in piece)
        if add_eos:
            ids.append(self.eos_id)
        return ids

    def decode_text(self, ids: Iterable[int] | torch.Tensor, skip_special: bool = True) -> str:
        """Ids -> text. Special and image tokens are dropped, or shown as <...> / <img_N>."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        out = []
        for i in ids:
            i = int(i)
            if i < 0 or i >= self.vocab_size:
                raise TokredError(
                    f"token id {i} is outside the vocabulary 0..{self.vocab_size - 1}"
                )
            if i >= self.image_offset:
                if not skip_special:
                    out.append(f"<img_{i - self.image_offset}>")
            elif i < len(SPECIAL_TOKENS):
                if not skip_special:
                    out.append(self.tokens[i])
            else:
                out.append(self.tokens[i])
        return "".join(out)

    # ---- image tokens -------------------------------------------------------------------------
    def image_ids(self, codes: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """VQ codes -> token ids (codes + text_vocab_size)."""
        codes = torch.as_tensor(codes, dtype=torch.long)
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise TokredError(
                f"VQ codes outside 0..{self.codebook_size - 1}: the vocabulary was built for a "
                f"codebook of {self.codebook_size}; rebuild it for this tokenizer"
            )
        return codes + self.image_offset

    def codes_from_ids(self, ids: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """Token ids of image tokens -> VQ codes (error on any non-image id)."""
        ids = torch.as_tensor(ids, dtype=torch.long)
        if ids.numel() and not bool(self.is_image_id(ids).all()):
            raise TokredError("codes_from_ids got ids that are not image tokens")
        return ids - self.image_offset

    def is_image_id(self, ids: torch.Tensor) -> torch.Tensor:
        """Bool mask of image-token ids (boi/eoi are not image codes)."""
        return (ids >= self.image_offset) & (ids < self.vocab_size)

    # ---- persistence -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "version": 1,
            "level": self.level,
            "codebook_size": self.codebook_size,
            "tokens": self.tokens,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UnifiedVocab:
        if data.get("format") != _FORMAT:
            raise TokredError(
                f"not a unified vocabulary: format {data.get('format')!r}, expected {_FORMAT!r}"
            )
        return cls(data["tokens"], int(data["codebook_size"]), data["level"])

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the vocabulary as JSON, atomically."""
        path = Path(path)
        atomic_write_text(path, json.dumps(self.to_dict(), ensure_ascii=False, indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> UnifiedVocab:
        path = Path(path)
        if not path.is_file():
            raise TokredError(f"vocabulary file not found: {path} (build and save one first)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise TokredError(f"{path} is not valid JSON: {e}") from e
        if not isinstance(data, Mapping):
            raise TokredError(f"{path}: not a unified vocabulary (a JSON {type(data).__name__})")
        try:
            return cls.from_dict(data)
        except TokredError as e:
            raise TokredError(f"{path}: {e}") from None
        except (KeyError, TypeError, ValueError) as e:
            raise TokredError(f"{path}: a field is missing or malformed ({e!r})") from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UnifiedVocab) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return (
            f"UnifiedVocab(level={self.level!r}, text={self.text_vocab_size}, "
            f"image={self.codebook_size}, total={self.vocab_size})"
        )
