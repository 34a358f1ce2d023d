"""The training config's schema: what is trained (the model, the data, the reduction), and
the tree that holds every section (how to train, optim/lora/run/eval, is in
`training.py`; `loader.py` loads the tree).

Every field has a docstring and every section checks itself in `__post_init__`, so a bad
value is reported before any data or model is built. Mistakes raise `TokredError` with one
line that names the full key, e.g. ``optim.lrr: unknown key (known: batch_size, ...)`` or
``data.understanding_ratio: 1.5 is outside [0, 1]``. Paths (model.path, data.paths) are
not checked here, so a shipped recipe validates before the user points it at a model; they
are checked when the run builds its model and data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from tokred_core import (
    TASK_NAMES,
    TaskPolicies,
    TokenLayout,
    TokredError,
    build_policy,
    parse_sharing,
    parse_task,
)
from tokred_models.tiny import TINY_DEFAULTS

from .coerce import check_positive as _positive
from .coerce import config_error
from .strategy import StrategyConfig
from .training import EvalConfig, LoraConfig, OptimConfig, RunConfig

__all__ = [
    "ModelConfig",
    "DataConfig",
    "PolicySpec",
    "ReductionConfig",
    "TrainConfig",
    "DATA_KINDS",
    "check_policies_fit",
    "split_data_path",
]

DATA_KINDS = ("shapes", "llava", "jsonl", "folder")

_fail = config_error


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
    """tiny: longest sequence (RoPE table); a longer sample is refused, naming its record,
    when the run's data is built (a Hugging Face model: its max_position_embeddings)."""
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
    train_tasks: list[str] = field(default_factory=lambda: list(TASK_NAMES))
    """The tasks a run trains on, out of the same mixed batches: both is unified training;
    one task keeps only its own samples of each batch, so an isolated run sees exactly
    the samples of its task that the unified run sees, in the same order and over the same
    optimizer steps (the synergy study's fair budget)."""
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
    task_split: bool = False
    """shapes: hold some (kind, position) combinations out of each task's training images,
    each shown only by the other task, and validate on them (data/shapes/task_split.py):
    a benchmark on which a task can only learn them from the other task's data."""
    paths: list[str] = field(default_factory=list)
    """Real formats: data files or folders. An entry may name its format with a prefix,
    e.g. 'llava:/data/llava.json' next to 'jsonl:/data/gen.jsonl' for a unified run."""
    image_root: str | None = None
    """Real formats: folder that image paths are relative to (llava; jsonl defaults to the
    JSONL's folder)."""
    on_bad_record: Literal["fail", "skip"] = "fail"
    """A record that cannot be read (bad JSON, missing fields): stop with its name, or
    leave it out."""
    on_bad_image: Literal["fail", "skip"] = "fail"
    """A missing or unreadable image: stop with its name, or leave the record out."""
    system_prompt: str | None = None
    """The SYSTEM segment of every sample (null: tokred_train.data.DEFAULT_SYSTEM_PROMPT)."""
    max_length: int | None = None
    """Refuse samples longer than this many tokens, naming the record and its file, when
    the data is built (null: only the model's position limit, model.max_positions)."""

    def __post_init__(self) -> None:
        if self.kind not in DATA_KINDS:
            raise _fail("data.kind", f"{self.kind!r} must be one of {', '.join(DATA_KINDS)}")
        if not 0.0 <= self.understanding_ratio <= 1.0:
            raise _fail("data.understanding_ratio", f"{self.understanding_ratio} is outside [0, 1]")
        self._check_train_tasks()
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
        elif self.task_split:
            raise _fail("data.task_split", f"applies to the shapes set, not kind {self.kind!r}")
        elif not self.paths:
            raise _fail("data.paths", f"kind {self.kind!r} needs at least one data file or folder")
        for entry in self.paths:
            kind, _ = split_data_path(entry, self.kind)
            if kind not in DATA_KINDS[1:]:
                raise _fail(
                    "data.paths", f"{entry!r}: format {kind!r} must be llava, jsonl or folder"
                )
        for key in ("on_bad_image", "on_bad_record"):
            if getattr(self, key) not in ("fail", "skip"):
                raise _fail(f"data.{key}", f"{getattr(self, key)!r} must be 'fail' or 'skip'")

    def _check_train_tasks(self) -> None:
        tasks = self.train_tasks
        unknown = [t for t in tasks if t not in TASK_NAMES]
        if unknown or not tasks or len(set(tasks)) != len(tasks):
            raise _fail(
                "data.train_tasks",
                f"{tasks}: name understanding, generation or both, each once",
            )
        share = {
            "understanding": self.understanding_ratio,
            "generation": 1 - self.understanding_ratio,
        }
        if all(share[t] == 0 for t in tasks):
            raise _fail(
                "data.train_tasks",
                f"{tasks} get no samples at data.understanding_ratio={self.understanding_ratio}",
            )


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
    sharing: Literal["shared", "modality", "task", "aligned"] = "shared"
    """shared: image tokens use the text projections; modality: one image Q/K/V set for both
    tasks (the paper's 'share all'); task: one set per task ('share partial'); aligned: one
    set in the layers where the two tasks' plans coincide, one per task elsewhere."""

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
class TrainConfig:
    """The whole run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    reduction: ReductionConfig = field(default_factory=ReductionConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    run: RunConfig = field(default_factory=RunConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)

    def __post_init__(self) -> None:
        if self.strategy.gate_threshold is not None and not self.run.conflict_every:
            raise _fail(
                "strategy.gate_threshold",
                f"{self.strategy.gate_threshold} gates by the measured gradient conflict, "
                "which needs run.conflict_every > 0",
            )
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
