"""The training config's schema: one dataclass per section (model, data, reduction, optim,
lora, run, eval) and the tree that holds them (loaded by `loader.py`).

Every field has a docstring and every section checks itself in `__post_init__`, so a bad
value is reported before any data or model is built. Mistakes raise `TokredError` with one
line that names the full key, e.g. ``optim.lrr: unknown key (known: batch_size, ...)`` or
``data.understanding_ratio: 1.5 is outside [0, 1]``. Paths (model.path, data.paths) are
not checked here, so a shipped recipe validates before the user points it at a model; they
are checked when the run builds its model and data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from tokred_core import (
    TaskPolicies,
    TokenLayout,
    TokredError,
    build_policy,
    parse_sharing,
    parse_task,
)
from tokred_models.tiny import TINY_DEFAULTS

from .coerce import config_error

__all__ = [
    "ModelConfig",
    "DataConfig",
    "PolicySpec",
    "ReductionConfig",
    "OptimConfig",
    "LoraConfig",
    "RunConfig",
    "EvalConfig",
    "TrainConfig",
    "DATA_KINDS",
    "check_policies_fit",
    "split_data_path",
]

DATA_KINDS = ("shapes", "llava", "jsonl", "folder")
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")

_fail = config_error


def _positive(section: str, obj: Any, *names: str, allow_zero: bool = False) -> None:
    for name in names:
        value = getattr(obj, name)
        if value is None:
            continue
        if value < 0 or (value == 0 and not allow_zero):
            bound = ">= 0" if allow_zero else "> 0"
            raise _fail(f"{section}.{name}", f"{value} must be {bound}")


# ---- sections --------------------------------------------------------------------------------
@dataclass
class ModelConfig:
    """Which model to train. The tiny fields are `tokred_models.tiny.TinyUnifiedConfig`'s,
    by the same names and with its defaults."""

    section: ClassVar[str] = "model"

    kind: Literal["tiny", "hf"] = "tiny"
    """tiny: the embedded tiny unified Llama built from the dims below (vocab from the data);
    hf: a Hugging Face model loaded with from_pretrained from the local folder `path`."""
    hidden_size: int = TINY_DEFAULTS["hidden_size"]
    """tiny: width of the decoder."""
    intermediate_size: int = TINY_DEFAULTS["intermediate_size"]
    """tiny: width of the FFN."""
    num_layers: int = TINY_DEFAULTS["num_layers"]
    """tiny: decoder layers."""
    num_heads: int = TINY_DEFAULTS["num_heads"]
    """tiny: attention heads."""
    num_kv_heads: int = TINY_DEFAULTS["num_kv_heads"]
    """tiny: key/value heads (grouped-query attention when < num_heads)."""
    max_positions: int = TINY_DEFAULTS["max_positions"]
    """tiny: longest sequence (RoPE table)."""
    tie_embeddings: bool = TINY_DEFAULTS["tie_embeddings"]
    """tiny: share the input embedding and the output head."""
    path: str | None = None
    """hf: a local model folder (config.json + weights); nothing is downloaded."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """hf: weight dtype. auto: bfloat16 for a frozen (LoRA) base on CUDA, else float32 (full
    fine-tuning keeps float32 weights; run.bf16 autocasts the compute). Tiny: float32."""
    attn_implementation: str = "sdpa"
    """hf: attention kernel for the model's own (unreduced) forward."""

    def __post_init__(self) -> None:
        if self.kind not in ("tiny", "hf"):
            raise _fail("model.kind", f"{self.kind!r} must be 'tiny' or 'hf'")
        _positive("model", self, "hidden_size", "intermediate_size", "num_layers", "num_heads")
        _positive("model", self, "num_kv_heads", "max_positions")
        if self.kind == "tiny":
            if self.hidden_size % self.num_heads:
                raise _fail(
                    "model.hidden_size",
                    f"{self.hidden_size} is not divisible by model.num_heads={self.num_heads}",
                )
            if self.num_heads % self.num_kv_heads:
                raise _fail(
                    "model.num_heads",
                    f"{self.num_heads} is not divisible by model.num_kv_heads={self.num_kv_heads}",
                )
        if self.kind == "hf" and not self.path:
            raise _fail("model.path", "kind 'hf' needs the local folder of a Hugging Face model")


@dataclass
class DataConfig:
    """What to train on, and how the two tasks are mixed."""

    section: ClassVar[str] = "data"

    kind: Literal["shapes", "llava", "jsonl", "folder"] = "shapes"
    """shapes: the embedded synthetic set (built in memory); llava: LLaVA conversation JSON
    (understanding); jsonl: prompt-image JSONL (generation); folder: images with same-stem
    .txt captions (generation)."""
    understanding_ratio: float = 0.5
    """Fraction of every batch that is understanding samples (the rest is generation);
    1 trains understanding only, 0 generation only."""
    num_train: int = 1000
    """shapes: training images (each gives one generation and several understanding samples)."""
    num_val: int = 100
    """shapes: validation images; real formats: samples of each task held out for validation."""
    image_size: int = 32
    """Side of the (square) images the VQ tokenizer sees; real images are resized to it."""
    max_shapes: int = 1
    """shapes: at most this many shapes per image (1..4)."""
    seed: int = 0
    """Seed of the data set, the held-out split and the VQ codebook fit."""
    codebook_size: int = 64
    """Patch VQ codebook entries (image tokens in the vocabulary)."""
    patch_size: int = 4
    """Patch VQ patch side in pixels: an image becomes (image_size / patch_size)^2 tokens."""
    questions_per_image: int | None = None
    """shapes: keep only the first N understanding questions per image (null: all)."""
    paths: list[str] = field(default_factory=list)
    """Real formats: data files or folders. An entry may name its format with a prefix,
    e.g. 'llava:/data/llava.json' next to 'jsonl:/data/gen.jsonl' for a unified run."""
    image_root: str | None = None
    """Real formats: folder that image paths are relative to (llava; jsonl defaults to the
    JSONL's folder)."""
    on_bad_image: Literal["fail", "skip"] = "fail"
    """A missing or unreadable image: stop with its name, or leave the record out."""
    system_prompt: str | None = None
    """The SYSTEM segment of every sample (null: tokred_train.data.DEFAULT_SYSTEM_PROMPT)."""
    max_length: int | None = None
    """Refuse samples longer than this many tokens (null: no limit)."""

    def __post_init__(self) -> None:
        if self.kind not in DATA_KINDS:
            raise _fail("data.kind", f"{self.kind!r} must be one of {', '.join(DATA_KINDS)}")
        if not 0.0 <= self.understanding_ratio <= 1.0:
            raise _fail("data.understanding_ratio", f"{self.understanding_ratio} is outside [0, 1]")
        _positive("data", self, "num_train", "image_size", "codebook_size", "patch_size")
        _positive("data", self, "num_val", "questions_per_image", allow_zero=True)
        _positive("data", self, "max_length")
        if self.image_size % self.patch_size:
            raise _fail(
                "data.patch_size",
                f"{self.patch_size} does not divide data.image_size={self.image_size}",
            )
        if self.kind == "shapes":
            if not 1 <= self.max_shapes <= 4:
                raise _fail("data.max_shapes", f"{self.max_shapes} must be in 1..4")
            if self.image_size < 8 or self.image_size % 2:
                raise _fail("data.image_size", f"{self.image_size} must be even and >= 8")
            if self.paths:
                raise _fail("data.paths", "the shapes set is built in memory; remove the paths")
        elif not self.paths:
            raise _fail("data.paths", f"kind {self.kind!r} needs at least one data file or folder")
        for entry in self.paths:
            kind, _ = split_data_path(entry, self.kind)
            if kind not in DATA_KINDS[1:]:
                raise _fail(
                    "data.paths", f"{entry!r}: format {kind!r} must be llava, jsonl or folder"
                )
        if self.on_bad_image not in ("fail", "skip"):
            raise _fail("data.on_bad_image", f"{self.on_bad_image!r} must be 'fail' or 'skip'")


def split_data_path(entry: str, default_kind: str) -> tuple[str, str]:
    """'jsonl:/x/y.jsonl' -> ('jsonl', '/x/y.jsonl'); no known prefix -> (default_kind, entry)."""
    head, sep, rest = entry.partition(":")
    if sep and head in DATA_KINDS[1:]:
        return head, rest
    return default_kind, entry


@dataclass
class PolicySpec:
    """One task's reduction policy. YAML: `{policy: hmgen, options: {num_shallow: 1}}`, just
    the name: `hmgen`, or both as on the command line: `hmgen:num_shallow=1` (saved as first)."""

    SHORTHAND_FIELD: ClassVar[str] = "policy"

    policy: str = "none"
    """A tokred_core policy name (none, himix, hmgen, fastv, pyramid_drop, random_drop)."""
    options: dict[str, Any] = field(default_factory=dict)
    """The policy's config fields, e.g. {start_layer: 1} for himix."""

    def __post_init__(self) -> None:
        if ":" in self.policy:  # tokred_core's grammar, `hmgen:num_shallow=1`: its options win
            from tokred_core import split_policy_spec

            self.policy, given = split_policy_spec(self.policy, "reduction policy", typed=True)
            self.options = {**self.options, **given}

    def build(self):
        return build_policy(self.policy, **self.options)


@dataclass
class ReductionConfig:
    """Per-task token reduction and which image projection sets the tasks share."""

    section: ClassVar[str] = "reduction"

    understanding: PolicySpec = field(default_factory=PolicySpec)
    """Policy for understanding samples (e.g. himix)."""
    generation: PolicySpec = field(default_factory=PolicySpec)
    """Policy for generation samples (e.g. hmgen)."""
    sharing: Literal["shared", "modality", "task"] = "shared"
    """shared: image tokens use the text projections; modality: one image Q/K/V set for both
    tasks (the paper's 'share all'); task: one set per task ('share partial')."""

    def __post_init__(self) -> None:
        built = {}
        for task in ("understanding", "generation"):
            spec = getattr(self, task)
            try:
                built[task] = spec.build()
            except TokredError as exc:
                raise _fail(f"reduction.{task}", str(exc)) from None
        try:
            TaskPolicies(built)
        except TokredError as exc:
            raise _fail("reduction", str(exc)) from None
        try:
            parse_sharing(self.sharing)
        except TokredError as exc:
            raise _fail("reduction.sharing", str(exc)) from None

    def task_policies(self) -> TaskPolicies:
        return TaskPolicies(
            {"understanding": self.understanding.build(), "generation": self.generation.build()}
        )


@dataclass
class OptimConfig:
    """AdamW with linear warm-up and cosine decay."""

    section: ClassVar[str] = "optim"

    lr: float = 1e-3
    """Peak learning rate (reached at the end of the warm-up)."""
    weight_decay: float = 0.0
    """Decoupled weight decay on matrices (never on biases, norms or 1-D parameters)."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    """AdamW (beta1, beta2)."""
    eps: float = 1e-8
    """AdamW epsilon."""
    warmup_steps: int = 10
    """Steps of linear warm-up from 0 to lr."""
    max_steps: int = 200
    """Optimizer steps of the run."""
    batch_size: int = 16
    """Samples per micro-batch (per process)."""
    grad_accum: int = 1
    """Micro-batches per optimizer step; the loss is the token mean over all of them."""
    clip_norm: float | None = 1.0
    """Clip the global gradient norm to this (null or 0: no clipping, norm still logged)."""
    schedule: Literal["cosine", "constant"] = "cosine"
    """cosine: decay from lr to lr * min_lr_ratio after the warm-up; constant: stay at lr."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of lr (cosine)."""

    def __post_init__(self) -> None:
        _positive("optim", self, "lr", "max_steps", "batch_size", "grad_accum", "eps")
        _positive("optim", self, "weight_decay", "warmup_steps", "clip_norm", allow_zero=True)
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise _fail("optim.betas", f"{self.betas} must be two numbers in [0, 1)")
        if self.schedule not in ("cosine", "constant"):
            raise _fail("optim.schedule", f"{self.schedule!r} must be 'cosine' or 'constant'")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise _fail("optim.min_lr_ratio", f"{self.min_lr_ratio} is outside [0, 1]")


@dataclass
class LoraConfig:
    """Full fine-tuning (enabled: false), LoRA, or QLoRA (LoRA on a 4-bit base)."""

    section: ClassVar[str] = "lora"

    enabled: bool = False
    """Train LoRA adapters (peft) instead of all weights."""
    r: int = 8
    """LoRA rank."""
    alpha: float = 16.0
    """LoRA scaling numerator (scale = alpha / r)."""
    dropout: float = 0.0
    """Dropout on the LoRA input."""
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )
    """Module name suffixes to adapt. The defaults also match the image projection sets
    that reduction adds (`self_attn.image_proj.<set>.q_proj`)."""
    modules_to_save: list[str] = field(default_factory=list)
    """Modules trained in full next to the adapters (peft modules_to_save), by name suffix,
    e.g. [generation_head] for Janus. With quantize_4bit they are loaded unquantized (with
    lm_head; this list then replaces transformers' default skip list)."""
    quantize_4bit: bool = False
    """QLoRA: a frozen 4-bit (bitsandbytes) base. hf: loaded with BitsAndBytesConfig; tiny:
    its decoder linears are replaced by bnb Linear4bit in place (works on CPU)."""
    quant_type: Literal["nf4", "fp4"] = "nf4"
    """4-bit data type."""
    double_quant: bool = True
    """hf: also quantize the quantization constants (bnb_4bit_use_double_quant)."""

    def __post_init__(self) -> None:
        _positive("lora", self, "r", "alpha")
        if not 0.0 <= self.dropout < 1.0:
            raise _fail("lora.dropout", f"{self.dropout} is outside [0, 1)")
        if not self.target_modules:
            raise _fail("lora.target_modules", "name at least one module")
        if self.modules_to_save and not self.enabled:
            raise _fail(
                "lora.modules_to_save",
                "names modules to train next to LoRA adapters, so it needs lora.enabled=true",
            )
        if self.quantize_4bit and not self.enabled:
            raise _fail(
                "lora.quantize_4bit",
                "a 4-bit base is frozen, so it needs lora.enabled=true (QLoRA)",
            )
        if self.quant_type not in ("nf4", "fp4"):
            raise _fail("lora.quant_type", f"{self.quant_type!r} must be 'nf4' or 'fp4'")


@dataclass
class RunConfig:
    """Where the run writes, how often, and on what."""

    section: ClassVar[str] = "run"

    out_dir: str = "runs/tiny-shapes"
    """Run folder: config.yaml, metrics.jsonl, tensorboard/, checkpoints/, summary.json."""
    seed: int = 0
    """Seed of python, numpy and torch (model init, LoRA init, dropout, batch order)."""
    log_every: int = 10
    """Steps between metric flushes (JSONL, TensorBoard, progress bar)."""
    ckpt_every: int = 0
    """Steps between checkpoints (0: only the final one)."""
    keep_checkpoints: int = 2
    """Complete checkpoints kept; older ones are deleted (0: keep all)."""
    save_final: bool = True
    """Write a checkpoint after the last step."""
    resume: bool = False
    """Continue from the newest complete checkpoint in out_dir (start fresh if none)."""
    gradient_checkpointing: bool = False
    """Recompute layer activations in the backward pass (use_reentrant=False)."""
    bf16: bool | None = None
    """bfloat16 autocast; null: on when training on CUDA, off on CPU."""
    device: str = "auto"
    """auto (CUDA when available, else CPU), cpu, cuda or cuda:N."""
    threads: int | None = None
    """CPU threads for torch during the run (null: torch's default). A tiny model on a busy
    machine runs fastest with 1: its ops are too small to amortise waking other threads."""
    progress: bool = True
    """Show a tqdm progress bar with loss, tokens/s and ETA."""
    tensorboard: bool = True
    """Write TensorBoard scalars to out_dir/tensorboard."""
    prefetch: int | None = None
    """Micro-batches collated ahead in a background thread (0: collate in the loop; null:
    2 when training on CUDA, 0 on the CPU, where collation would compete with the model for
    the same cores). The batches are the same either way (prefetch.py)."""

    def __post_init__(self) -> None:
        _positive("run", self, "log_every", "threads")
        _positive(
            "run", self, "ckpt_every", "keep_checkpoints", "seed", "prefetch", allow_zero=True
        )
        if not self.out_dir:
            raise _fail("run.out_dir", "must name a folder")
        if not _DEVICE.match(self.device):
            raise _fail("run.device", f"{self.device!r} must be auto, cpu, cuda or cuda:N")


@dataclass
class EvalConfig:
    """Validation loss during and after training (task metrics live in `tokred eval`)."""

    section: ClassVar[str] = "eval"

    every: int = 0
    """Steps between validation losses (0: only after the last step)."""
    at_end: bool = True
    """Compute the validation loss after the last step."""
    max_samples: int = 64
    """Validation samples per task (from the held-out split)."""
    batch_size: int | None = None
    """Validation batch size (null: optim.batch_size)."""

    def __post_init__(self) -> None:
        _positive("eval", self, "every", "max_samples", allow_zero=True)
        _positive("eval", self, "batch_size")


@dataclass
class TrainConfig:
    """The whole run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    reduction: ReductionConfig = field(default_factory=ReductionConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    run: RunConfig = field(default_factory=RunConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        if self.model.kind == "tiny":  # the depth is known: check the policies fit it now
            check_policies_fit(self.reduction, self.model.num_layers)


def check_policies_fit(reduction: ReductionConfig, num_layers: int) -> None:
    """Plan a small two-task layout on `num_layers` layers; raise naming the reduction key."""
    layout = TokenLayout.from_spans(
        [
            [("system", 2), ("image", 4), ("instruction", 2), ("output", 2)],
            [("system", 2), ("instruction", 2), ("output", 5)],
        ],
        ["understanding", "generation"],
    )
    for task in ("understanding", "generation"):
        try:
            getattr(reduction, task).build().plan(
                layout.select(layout.task_mask(parse_task(task))), num_layers
            )
        except TokredError as exc:
            raise _fail(f"reduction.{task}", str(exc)) from None
