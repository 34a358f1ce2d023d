"""What `tokred bench` times: a decoder shape plus the batch it runs on.

A bench shape is the decoder's sizes (those the cost model prices, plus the vocabulary the
LM loss needs) and the canonical batch: T text and M image tokens per sample
(`tokred_core.canonical_spans`), `batch` samples. It comes from a preset name or from a
Hugging Face `config.json` whose decoder keys (`hidden_size`, ...) `DecoderShape` reads,
with the optional bench keys `text_tokens`, `image_tokens`, `batch` and `seq_lens` beside
them. Only the sizes are taken: the model is a random-weight Llama of those sizes, so a
config of another family is timed as the Llama decoder of its shape.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tokred_core import DecoderShape, TokredError
from tokred_core.shapes import read_config_json

if TYPE_CHECKING:
    from transformers import LlamaForCausalLM

__all__ = ["BenchShape", "BENCH_PRESETS", "BENCH_KEYS", "load_bench_shape"]

#: The keys a shape's JSON may add to a Hugging Face config (all optional).
BENCH_KEYS = ("text_tokens", "image_tokens", "batch", "seq_lens")
# Tokens per sample above which the sweep stops: a plan is (layers x batch x tokens) and
# a dense mask (batch x tokens^2), so a typo such as 1e6 would only exhaust memory.
_MAX_TOKENS = 65_536
_MAX_VOCAB = 1 << 20


@dataclass(frozen=True)
class BenchShape:
    """A Llama decoder's sizes and the canonical batch it is timed on."""

    name: str
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    text_tokens: int
    image_tokens: int
    batch: int
    vocab_size: int = 2048
    head_dim: int | None = None
    seq_lens: tuple[int, ...] = ()
    """Tokens per sample (T + M) of the efficiency sweep, beside this shape's own."""

    def __post_init__(self) -> None:
        for key in ("text_tokens", "image_tokens", "batch"):
            _check_count(self.name, key, getattr(self, key))
        _check_count(self.name, "vocab_size", self.vocab_size, _MAX_VOCAB)
        for value in self.seq_lens:
            _check_seq_len(self.name, value, self.text_tokens)
        # DecoderShape checks the decoder's sizes (heads divide, positive) in its words.
        self.decoder_shape()

    @property
    def seq_len(self) -> int:
        """Tokens per sample: T text + M image (both tasks' canonical samples)."""
        return self.text_tokens + self.image_tokens

    def decoder_shape(self) -> DecoderShape:
        """The decoder, for the cost model."""
        try:
            return DecoderShape(
                self.hidden_size,
                self.intermediate_size,
                self.num_layers,
                self.num_heads,
                self.num_kv_heads,
                head_dim=self.head_dim,
                vocab_size=self.vocab_size,
            )
        except TokredError as exc:
            raise TokredError(f"shape {self.name!r}: {exc}") from None

    def replace(self, **changes: Any) -> BenchShape:
        return dataclasses.replace(self, **changes)

    def at_seq_len(self, seq_len: int) -> BenchShape:
        """The same shape with M = seq_len - T image tokens per sample."""
        _check_seq_len(self.name, seq_len, self.text_tokens)
        return self.replace(image_tokens=seq_len - self.text_tokens)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["seq_lens"] = list(self.seq_lens)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchShape:
        return cls(**{**data, "seq_lens": tuple(data.get("seq_lens", ()))})

    def build_model(self, seed: int = 0) -> LlamaForCausalLM:
        """A random-weight `LlamaForCausalLM` of this shape (SDPA attention), seeded."""
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM

        config = LlamaConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_kv_heads,
            head_dim=self.decoder_shape().head_dim,
            # RoPE is computed per call, so a long limit costs nothing and fits every sweep.
            max_position_embeddings=_MAX_TOKENS,
            tie_word_embeddings=False,
            attn_implementation="sdpa",
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return LlamaForCausalLM(config).train()


def _check_count(where: str, key: str, value: Any, maximum: int = _MAX_TOKENS) -> None:
    # bool is an int subclass: `batch: true` is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise TokredError(f"{where}: {key}={value!r} must be an integer in 1..{maximum}")


def _check_seq_len(where: str, value: Any, text_tokens: int) -> None:
    _check_count(where, "seq_lens", value)
    if value <= text_tokens:
        raise TokredError(
            f"{where}: seq_lens={value} must exceed the {text_tokens} text tokens per sample "
            "(the rest of each sample is image tokens)"
        )


BENCH_PRESETS: dict[str, BenchShape] = {
    # The package README's benchmark: large enough that matrix products, not per-op
    # overhead, dominate a CPU step.
    "compute-bound": BenchShape(
        "compute-bound", 1024, 2816, 4, 16, 16, 64, 576, 2, seq_lens=(320, 1280)
    ),
    # `tokred demo`'s tiny model on its data: 32x32 images in 8x8 patches (16 codes) and
    # about 33 text tokens, batches of 16. Cheap: the default sweep stays within seconds.
    "demo": BenchShape("demo", 128, 344, 4, 4, 2, 33, 16, 16, vocab_size=512, seq_lens=(97, 193)),
    # LLaMA-3.2-1B's decoder with LLaVA-1.5's 576 image tokens, for a GPU. The vocabulary
    # is smaller than its 128256: the LM head is neither priced nor reduced, and at full
    # size it would be a quarter of every arm's time.
    "llama-1b": BenchShape(
        "llama-1b", 2048, 8192, 16, 32, 8, 128, 576, 4, vocab_size=32000, seq_lens=(320, 1280)
    ),
}


def load_bench_shape(spec: str | Path) -> BenchShape:
    """A preset name, or a `config.json` (or a folder holding one) with optional bench keys."""
    if isinstance(spec, str) and spec in BENCH_PRESETS:
        return BENCH_PRESETS[spec]
    source, data = read_config_json(spec, "shape", BENCH_PRESETS)
    return shape_from_config(data, source)


def shape_from_config(data: Any, source: str) -> BenchShape:
    """The bench shape of a config dict: the decoder from its HF keys, the batch from the
    bench keys (defaults: the `compute-bound` preset's batch, 64 text + 576 image tokens)."""
    decoder = DecoderShape.from_hf_config(data, source=source)  # checks it is a dict too
    base = BENCH_PRESETS["compute-bound"]
    extra = {key: data[key] for key in BENCH_KEYS if key in data}
    seq_lens = extra.pop("seq_lens", [])
    if not isinstance(seq_lens, list):
        raise TokredError(f"{source}: seq_lens={seq_lens!r} must be a list of integers")
    return BenchShape(
        name=source,
        hidden_size=decoder.hidden_size,
        intermediate_size=decoder.intermediate_size,
        num_layers=decoder.num_layers,
        num_heads=decoder.num_heads,
        num_kv_heads=decoder.num_kv_heads,
        head_dim=decoder.head_dim,
        vocab_size=decoder.vocab_size or base.vocab_size,
        text_tokens=extra.get("text_tokens", base.text_tokens),
        image_tokens=extra.get("image_tokens", base.image_tokens),
        batch=extra.get("batch", base.batch),
        seq_lens=tuple(seq_lens),
    )
