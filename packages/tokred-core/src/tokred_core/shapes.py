"""Decoder shapes: the few numbers of a decoder stack that its FLOPs depend on.

A shape comes from a preset name (`PRESETS`) or from a Hugging Face `config.json`, so the
cost model (and `tokred flops`) can price a plan without loading any weights or importing
transformers.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import TokredError

__all__ = ["DecoderShape", "PRESETS", "load_shape", "read_config_json"]

# Multimodal configs (LLaVA, Janus, InternVL, transformers' Emu3/Chameleon wrappers) nest
# the language model's config under one of these keys; the decoder is what we price.
_NESTED_TEXT_KEYS = ("text_config", "language_config", "llm_config", "text_model")


@dataclass(frozen=True)
class DecoderShape:
    """A LLaMA-style decoder stack."""

    hidden_size: int
    """d, the width of the residual stream."""
    intermediate_size: int
    """Width of the FFN's hidden layer."""
    num_layers: int
    """Number of decoder layers L."""
    num_heads: int
    """Query heads H."""
    num_kv_heads: int
    """Key/value heads (grouped-query attention when smaller than num_heads)."""
    head_dim: int | None = None
    """Per-head width; default hidden_size // num_heads (filled in on construction)."""
    gated_ffn: bool = True
    """SwiGLU-style FFN with three matrices (gate, up, down); False for two (up, down)."""
    vocab_size: int | None = None
    """Vocabulary size, informational only: embeddings and lm_head are not priced."""

    def __post_init__(self) -> None:
        for name in ("hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads"):
            _check_positive(name, getattr(self, name))
        if self.num_heads % self.num_kv_heads:
            raise TokredError(
                f"num_heads={self.num_heads} is not divisible by num_kv_heads={self.num_kv_heads}: "
                "grouped-query attention shares each key/value head among a whole number of query heads"
            )
        if self.head_dim is None:
            if self.hidden_size % self.num_heads:
                raise TokredError(
                    f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}; "
                    "give head_dim explicitly"
                )
            # frozen dataclass: the default is derived once, here.
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_heads)
        _check_positive("head_dim", self.head_dim)
        if not isinstance(self.gated_ffn, bool):
            raise TokredError(f"gated_ffn={self.gated_ffn!r} must be true or false")
        if self.vocab_size is not None:
            _check_positive("vocab_size", self.vocab_size)

    @property
    def q_width(self) -> int:
        """Output width of the query projection (and input width of o_proj)."""
        return self.num_heads * self.head_dim  # type: ignore[operator]

    @property
    def kv_width(self) -> int:
        """Output width of each of the key and value projections."""
        return self.num_kv_heads * self.head_dim  # type: ignore[operator]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_hf_config(cls, config: dict[str, Any], source: str = "config") -> DecoderShape:
        """The decoder shape of a Hugging Face `config.json` dict (LLaMA-style keys).

        A nested `text_config` / `language_config` / `llm_config` (multimodal models such as
        Janus, LLaVA, transformers' Chameleon/Emu3 wrappers) is preferred over top-level keys.
        `num_key_value_heads` defaults to `num_attention_heads` (no GQA) and `head_dim` to
        hidden_size // num_attention_heads, as in transformers. The FFN is assumed gated,
        which holds for the LLaMA family these unified models are built on.
        """
        if not isinstance(config, dict):
            raise TokredError(f"{source}: expected a JSON object, got {type(config).__name__}")
        section, where = config, source
        for key in _NESTED_TEXT_KEYS:
            nested = config.get(key)
            if isinstance(nested, dict) and "hidden_size" in nested:
                section, where = nested, f"{source} ({key})"
                break
        required = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
        missing = [k for k in required if section.get(k) is None]
        if missing:
            raise TokredError(
                f"{where}: missing {', '.join(repr(k) for k in missing)}; a LLaMA-style decoder "
                "config needs " + ", ".join(required)
            )
        heads = section["num_attention_heads"]
        kv_heads = section.get("num_key_value_heads")
        try:
            return cls(
                hidden_size=section["hidden_size"],
                intermediate_size=section["intermediate_size"],
                num_layers=section["num_hidden_layers"],
                num_heads=heads,
                num_kv_heads=heads if kv_heads is None else kv_heads,
                head_dim=section.get("head_dim"),
                vocab_size=section.get("vocab_size"),
            )
        except TokredError as exc:
            raise TokredError(f"{where}: {exc}") from None


def _check_positive(name: str, value: Any) -> None:
    # bool is an int subclass; True layers is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise TokredError(f"{name}={value!r} must be a positive integer")


PRESETS: dict[str, DecoderShape] = {
    # VILA-U 7B is LLaMA-2-7B: the model the paper's allocation study uses.
    "vila-u-7b": DecoderShape(4096, 11008, 32, 32, 32),
    # The 3B backbone of the paper's results table (LLaMA-3.2-3B).
    "llama-3.2-3b": DecoderShape(3072, 8192, 28, 24, 8, head_dim=128, vocab_size=128256),
    "llama-3.2-1b": DecoderShape(2048, 8192, 16, 32, 8, head_dim=64, vocab_size=128256),
    # A toy stack for tests and quick CLI checks.
    "tiny": DecoderShape(64, 128, 4, 4, 2),
}


def read_config_json(spec: str | Path, what: str, presets) -> tuple[str, dict]:
    """(path, parsed JSON) of a `config.json` named by `spec` (a file, or a folder holding
    one); a TokredError naming `what` and the `presets` otherwise. Shared by every loader
    that takes a preset name or a Hugging Face config."""
    path = Path(spec)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise TokredError(
            f"{what} {str(spec)!r} is neither a preset ({', '.join(sorted(presets))}) "
            f"nor an existing file ({path} not found)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise TokredError(f"cannot read {what} {str(path)!r}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise TokredError(f"{what} {str(path)!r} is not valid JSON: {exc}") from None
    return str(path), data


def load_shape(spec: str | Path) -> DecoderShape:
    """A preset name, a path to a `config.json`, or a directory holding one."""
    if isinstance(spec, str) and spec in PRESETS:
        return PRESETS[spec]
    source, data = read_config_json(spec, "config", PRESETS)
    return DecoderShape.from_hf_config(data, source=source)
