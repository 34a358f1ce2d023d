"""Tiny local stand-ins for real model folders, for tests and smoke runs of recipes.

Why: nothing can be downloaded here, yet `model.kind: hf` runs read a Hugging Face folder
(config.json, weights, tokenizer files). These builders write that folder for a real
transformers architecture at toy size (the configs of `tokred_models.testing`), with a
word-level tokenizer covering the texts a test trains on, so a recipe runs end to end
(load, 4-bit, patch, LoRA, data, loss) in seconds. The weights are random: stand-ins check
plumbing, never quality. `tiny_run_config` is the training config of such a run, and
`save_tiny_feature_extractor` stands in for the FID Inception network file.
"""

from __future__ import annotations

import os
import re
import shutil
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from .config import TrainConfig
    from .run.loop import RunResult

__all__ = [
    "save_word_tokenizer",
    "SpecialTokens",
    "JANUS_TOKENS",
    "EMU3_TOKENS",
    "CHAMELEON_TOKENS",
    "save_tiny_janus",
    "save_tiny_emu3",
    "save_tiny_chameleon",
    "HIMIX_HMGEN",
    "tiny_run_config",
    "torchrun_env",
    "tiny_run_texts",
    "words_of",
    "shapes_texts",
    "snapshot_parameters",
    "changed_parameters",
    "retrain",
    "save_tiny_feature_extractor",
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


def _text(tokenizer: Any, layers: int, max_positions: int, **fields: Any) -> dict[str, Any]:
    """The language model of a stand-in: `tokred_models.testing`'s, over the tokenizer's
    vocabulary and special ids (and `fields`)."""
    return dict(
        **fields,
        vocab_size=len(tokenizer),
        num_hidden_layers=layers,
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


def retrain(
    built: RunResult, config: TrainConfig | None = None, overrides: Sequence[str] = ()
) -> tuple[RunResult, set[str]]:
    """Train a built run from scratch and see which parameters training moved.

    `built` is what `train(..., stop_after_step=0)` returned (the run built, no step taken).
    Its folder is removed, then `train(config or built.config, overrides=overrides)` runs
    in it. Returns that result and the names of the parameters that differ from `built`'s.
    """
    from .run.loop import train

    before = snapshot_parameters(built.model)
    shutil.rmtree(built.run_dir)
    result = train(config or built.config, overrides=overrides)
    return result, changed_parameters(before, result.model)


@dataclass(frozen=True)
class SpecialTokens:
    """A family's special tokens by role, as its processor and loss path look them up."""

    pad: str
    bos: str
    eos: str
    unk: str
    boi: str
    """Begins an image's tokens."""
    eoi: str
    """Ends an image's tokens."""
    image: str
    """The placeholder of an input image."""
    others: tuple[str, ...] = ()
    """Further specials the family's processor expects."""

    @property
    def specials(self) -> tuple[str, ...]:
        return (
            self.pad,
            self.bos,
            self.eos,
            self.unk,
            self.boi,
            self.eoi,
            *self.others,
            self.image,
        )

    def ids(self, tokenizer: Any, visual: Sequence[str] = ()) -> dict[str, int]:
        """Each special and `visual` token's id in `tokenizer`: a family's vocabulary_map."""
        return {t: tokenizer.convert_tokens_to_ids(t) for t in (*self.specials, *visual)}

    def save_tokenizer(
        self,
        folder: str | Path,
        texts: Iterable[str],
        visual: Sequence[str] = (),
        words: Sequence[str] = (),
    ) -> Any:
        """`save_word_tokenizer` over the words of `texts` (then `words`) with these specials,
        then the `visual` tokens (an image's codes in the LM vocabulary)."""
        return save_word_tokenizer(
            folder,
            [*words_of(texts), *words],
            (*self.specials, *visual),
            {"image_token": self.image, "boi_token": self.boi, "eoi_token": self.eoi},
            pad_token=self.pad,
            bos_token=self.bos,
            eos_token=self.eos,
            unk_token=self.unk,
        )


JANUS_TOKENS = SpecialTokens(
    "<pad>", "<bos>", "<eos>", "<unk>", "<begin_of_image>", "<end_of_image>", "<image_placeholder>"
)
EMU3_TOKENS = SpecialTokens(
    "<|endoftext|>",
    "<|extra_203|>",
    "<|extra_204|>",
    "<unk>",
    "<|image start|>",
    "<|image end|>",
    "<image>",
    others=("<|image token|>", "<|extra_200|>", "<|extra_201|>"),
)
CHAMELEON_TOKENS = SpecialTokens(
    "<pad>", "<s>", "</s>", "<unk>", "<racm3:break>", "<eoss>", "<image>"
)


def _write(
    folder: str | Path,
    texts: Iterable[str],
    tokens: SpecialTokens,
    make_config: Callable[[Any], Any],
    model_class: type[torch.nn.Module],
    seed: int,
    visual: Sequence[str] = (),
    words: Sequence[str] = (),
) -> Path:
    """A stand-in folder: the tokenizer (`tokens.save_tokenizer`), then a `model_class` of
    `make_config(tokenizer)` with weights drawn from `seed`."""
    folder = Path(folder)
    config = make_config(tokens.save_tokenizer(folder, texts, visual, words))
    torch.manual_seed(seed)
    return _save(model_class(config), folder)


def save_tiny_janus(
    folder: str | Path, texts: Iterable[str], layers: int = 4, seed: int = 0
) -> Path:
    """JanusForConditionalGeneration at hidden 32 with its tokenizer: SigLIP reads 16 px
    images as 16 tokens; the VQ writes 8 px images as 16 codes from a codebook of 32."""
    from tokred_models.testing import janus_config
    from transformers import JanusForConditionalGeneration

    def config(tok):
        # The VQ grid is vision image_size // patch_size = 4 x 4.
        image = tok.convert_tokens_to_ids(JANUS_TOKENS.image)
        return janus_config(image, codes=32, patch_size=4, **_text(tok, layers, 256))

    return _write(folder, texts, JANUS_TOKENS, config, JanusForConditionalGeneration, seed)


EMU3_CODES = 8


def save_tiny_emu3(
    folder: str | Path, texts: Iterable[str], layers: int = 4, seed: int = 0
) -> Path:
    """Emu3ForConditionalGeneration at hidden 32 with its tokenizer: its VQ writes an image
    as a grid of codes (spatial factor 2) from a codebook of 8, each code a visual token
    of the LM vocabulary."""
    from tokred_models.testing import emu3_config, emu3_image_tokens
    from transformers import Emu3ForConditionalGeneration

    visual = emu3_image_tokens(EMU3_CODES)

    def config(tok):
        # Attention dropout 0.1, Emu3TextConfig's own default: this stand-in has always
        # trained with it (the other stand-ins have none).
        text = _text(tok, layers, 512, attention_dropout=0.1)
        return emu3_config(EMU3_TOKENS.ids(tok, visual), codes=EMU3_CODES, **text)

    digits = [*"0123456789", "*"]  # Emu3's image prompt spells the grid size: "8*8"
    model = Emu3ForConditionalGeneration
    return _write(folder, texts, EMU3_TOKENS, config, model, seed, visual, digits)


CHAMELEON_CODES = 16


def save_tiny_chameleon(
    folder: str | Path, texts: Iterable[str], layers: int = 4, seed: int = 0
) -> Path:
    """ChameleonForConditionalGeneration at hidden 32 with its tokenizer: its VQ writes a
    16 px image as 8 x 8 codes from a codebook of 16, each an `IMGIMG<letters>Z` token."""
    from tokred_models.testing import chameleon_config, chameleon_image_tokens
    from transformers import ChameleonForConditionalGeneration

    visual = chameleon_image_tokens(CHAMELEON_CODES)

    def config(tok):
        text = _text(tok, layers, 256)
        return chameleon_config(CHAMELEON_TOKENS.ids(tok, visual), codes=CHAMELEON_CODES, **text)

    model = ChameleonForConditionalGeneration
    return _write(folder, texts, CHAMELEON_TOKENS, config, model, seed, visual)


# ---- tiny runs ---------------------------------------------------------------------------
HIMIX_HMGEN: dict[str, Any] = {
    "understanding": "himix",
    "generation": {"policy": "hmgen", "options": {"num_shallow": 1}},
    "sharing": "task",
}
"""A `reduction` section: HiMix for understanding, HMGen with one shallow layer for
generation, one image projection set per task."""


_TINY_SHAPES = {"num_train": 12, "num_val": 4}


def tiny_run_texts() -> list[str]:
    """Every text of `tiny_run_config`'s shapes set: what a stand-in's tokenizer must cover
    to train and evaluate in such a run."""
    return shapes_texts(_TINY_SHAPES["num_train"], _TINY_SHAPES["num_val"])


def tiny_run_config(
    out_dir: str | Path, model_path: str | Path | None = None, **sections: dict[str, Any]
) -> TrainConfig:
    """A training config that runs in seconds, writing into `out_dir`.

    12 + 4 shapes images of 16 px (2 questions each), 3 steps of 4 samples, 4 samples per
    task evaluated, one thread, no progress bar or TensorBoard. The model is the tiny one
    at hidden 32 with 3 layers and a 16-code patch VQ or, given `model_path`, a stand-in
    folder (`save_tiny_*`) in float32 with its own image tokenizer. Each of `sections`
    (e.g. `reduction=HIMIX_HMGEN`, `optim={"max_steps": 1}`) updates that section's keys.
    """
    from .config import load_config

    if model_path is None:
        model = {"hidden_size": 32, "intermediate_size": 64, "num_layers": 3}
        patch_vq = {"patch_size": 4, "codebook_size": 16}
    else:
        model = {"kind": "hf", "path": str(model_path), "dtype": "float32"}
        patch_vq = {}
    base: dict[str, dict[str, Any]] = {
        "model": model,
        "data": {**_TINY_SHAPES, "image_size": 16, **patch_vq, "questions_per_image": 2},
        "optim": {"batch_size": 4, "max_steps": 3, "warmup_steps": 1, "lr": 3e-3},
        "run": {"out_dir": str(out_dir), "progress": False, "tensorboard": False, "threads": 1},
        "eval": {"max_samples": 4},
    }
    for section, values in sections.items():
        base.setdefault(section, {}).update(values)
    return load_config(base)


class _TinyFeatures(torch.nn.Module):
    """The FID Inception network's interface at toy size: float images (N, 3, H, W) in
    0..255, any size; pool features with return_features=True, else class logits."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, features, 3, padding=1)
        self.head = torch.nn.Linear(features, 4)

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        pooled = torch.relu(self.conv(x / 127.5 - 1.0)).mean(dim=(2, 3))
        return pooled if return_features else self.head(pooled)


class _TinyPlainFeatures(torch.nn.Module):
    """An extractor whose forward takes the images only and returns (N, C, 1, 1)."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, features, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(torch.relu(self.conv(x / 255.0)), 1)


def save_tiny_feature_extractor(
    path: str | Path, *, return_features: bool = True, features: int = 8, seed: int = 0
) -> Path:
    """A TorchScript feature extractor at `path` (random weights: plumbing, not quality),
    read like the FID network: with a `return_features` argument, or without one."""
    with torch.random.fork_rng(devices=[]):  # seeded weights, the caller's RNG untouched
        torch.manual_seed(seed)
        module = _TinyFeatures(features) if return_features else _TinyPlainFeatures(features)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's own deprecation notice
        scripted = torch.jit.script(module.eval())
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scripted.save(str(path))
    return path


def torchrun_env() -> dict[str, str]:
    """The environment of a test's torchrun job: this one, one torch thread per rank (2
    ranks share this 2-core machine), and faulthandler on, so that a rank that dies from a
    signal (SIGABRT at exit, say) prints every thread's Python stack into the stderr the
    test shows."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
