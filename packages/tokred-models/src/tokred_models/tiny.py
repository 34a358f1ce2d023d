"""The embedded tiny unified model: a VILA-U / Liquid-style decoder built from a config.

One Llama decoder whose vocabulary holds the text tokens, the VQ image codes and the
begin/end-of-image tokens, so both tasks are plain next-token prediction over one vocab:
understanding predicts text after image codes, generation predicts image codes after
text. Random weights; tests and the embedded default (`tokred demo`) train it from scratch.

`TinyUnifiedConfig` is the one home of the model's fields and their defaults: a training
config's `model` section carries the same fields under the same names (`TINY_FIELDS`) and
takes its defaults from here (`TINY_DEFAULTS`). transformers is imported only when a model
is built, so reading the defaults stays light.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from tokred_core import TokredError
from tokred_core.shapes import DecoderShape

if TYPE_CHECKING:
    from transformers import LlamaConfig, LlamaForCausalLM

__all__ = [
    "TinyUnifiedConfig",
    "TINY_FIELDS",
    "TINY_DEFAULTS",
    "build_tiny_unified_model",
]


@dataclass
class TinyUnifiedConfig:
    vocab_size: int
    """Text tokens + special tokens (boi/eoi/...) + VQ codebook size."""
    hidden_size: int = 128
    intermediate_size: int = 344
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    max_positions: int = 512
    tie_embeddings: bool = False
    seed: int | None = 0

    def __post_init__(self) -> None:
        for name in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_layers",
            "num_heads",
            "num_kv_heads",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise TokredError(f"tiny model {name}={value!r} must be a positive integer")
        if self.hidden_size % self.num_heads:
            raise TokredError(
                f"tiny model hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}"
            )
        if self.num_heads % self.num_kv_heads:
            raise TokredError(
                f"tiny model num_heads={self.num_heads} is not divisible by num_kv_heads={self.num_kv_heads}"
            )

    @classmethod
    def from_fields(cls, source: Any, vocab_size: int, seed: int | None = 0) -> TinyUnifiedConfig:
        """The config whose `TINY_FIELDS` are read off `source` (e.g. a training config's
        `model` section), with the vocabulary size and seed given here."""
        return cls(vocab_size=vocab_size, seed=seed, **{n: getattr(source, n) for n in TINY_FIELDS})

    def decoder_shape(self) -> DecoderShape:
        """The decoder's shape, for the cost model."""
        return DecoderShape(
            self.hidden_size,
            self.intermediate_size,
            self.num_layers,
            self.num_heads,
            self.num_kv_heads,
            vocab_size=self.vocab_size,
        )

    def to_llama_config(self) -> LlamaConfig:
        from transformers import LlamaConfig

        return LlamaConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_kv_heads,
            max_position_embeddings=self.max_positions,
            tie_word_embeddings=self.tie_embeddings,
            attn_implementation="sdpa",
        )


#: The architecture fields of the tiny model (all but the vocabulary size and the seed, which
#: come from the data and the run), by the names a training config's `model` section uses.
TINY_FIELDS: tuple[str, ...] = tuple(
    f.name for f in fields(TinyUnifiedConfig) if f.name not in ("vocab_size", "seed")
)

#: Each of `TINY_FIELDS` and its default.
TINY_DEFAULTS: dict[str, Any] = {
    f.name: f.default for f in fields(TinyUnifiedConfig) if f.name in TINY_FIELDS
}


def build_tiny_unified_model(config: TinyUnifiedConfig) -> LlamaForCausalLM:
    """A real `LlamaForCausalLM` with random weights (seeded when config.seed is set)."""
    import torch
    from transformers import LlamaForCausalLM

    if config.seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            return LlamaForCausalLM(config.to_llama_config())
    return LlamaForCausalLM(config.to_llama_config())
