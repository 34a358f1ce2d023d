"""How to train: the optimizer, the adapters (LoRA / QLoRA), the run (device, folder,
checkpoints, logging) and evaluation during training. `schema.py` holds what is trained:
the model, the data and the reduction, and the tree of all sections.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from .coerce import check_positive as _positive
from .coerce import config_error as _fail

__all__ = ["OptimConfig", "LoraConfig", "RunConfig", "EvalConfig"]

_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")


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
    overwrite: bool = False
    """Train into an out_dir that holds an earlier run's metrics but no checkpoint,
    replacing them (without it, such a folder is refused: its metrics would be lost)."""
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
    log_samples: bool = False
    """Write samples.jsonl: the sample indices of every micro-batch trained, by task (to
    check which samples a run saw; the study's fairness test reads it)."""
    prefetch: int | None = None
    """Micro-batches collated ahead in a background thread (0: collate in the loop; null:
    2 when training on CUDA, 0 on the CPU, where collation would compete with the model for
    the same cores). The batches are the same either way (prefetch.py)."""
    conflict_every: int = 0
    """Steps between measurements of the tasks' gradient conflict (0: off): per layer and
    parameter group, the cosine between the understanding and generation gradients on a
    fixed probe, and that cosine minus the one between two random halves of mixed data
    (Uni-X), into conflict.jsonl (run/conflict.py). Training is unchanged; the time is kept
    out of step times and reported in summary.json under gradient_conflict. It holds four
    copies of the trainable gradients at once."""
    conflict_samples: int = 8
    """Training samples per task in the conflict probe (the first ones of each task), run
    in batches of optim.batch_size: one measurement costs a forward and backward over twice
    this many samples."""

    on_nonfinite: str = "stop"
    """A step whose gradient norm is inf or NaN (a too high learning rate, an overflow):
    stop, with one line naming the step and the last good checkpoint; or skip_step: drop
    that update (the schedule still advances) and count it in summary.json."""
    distributed: str = "ddp"
    """How a torchrun job shares the model: ddp (DistributedDataParallel: a full copy of the
    weights, gradients and optimizer state per process, for small models) or fsdp (FSDP2
    `fully_shard` on every decoder layer and the root: each process holds 1/world of them;
    bf16 parameters with float32 gradient reduction under run.bf16, float32 otherwise;
    sharded checkpoints through torch.distributed.checkpoint). Ignored in one process."""
    fsdp_cpu_offload: bool = False
    """run.distributed=fsdp: keep the sharded parameters, gradients and optimizer state in
    CPU memory, gathered to the device layer by layer (slower; fits larger models)."""
    checkpoint_on_interrupt: bool = True
    """On SIGINT or SIGTERM (Ctrl-C, a cluster scheduler's notice): finish the current step,
    write a checkpoint, say how to resume and exit 130 or 143 (false: exit without one). A
    second signal stops at once, leaving the newest complete checkpoint as it is."""

    def __post_init__(self) -> None:
        if self.distributed not in ("ddp", "fsdp"):
            raise _fail("run.distributed", f"{self.distributed!r} must be ddp or fsdp")
        if self.on_nonfinite not in ("stop", "skip_step"):
            raise _fail("run.on_nonfinite", f"{self.on_nonfinite!r} must be stop or skip_step")
        _positive("run", self, "log_every", "threads", "conflict_samples")
        _positive(
            "run",
            self,
            "ckpt_every",
            "keep_checkpoints",
            "seed",
            "prefetch",
            "conflict_every",
            allow_zero=True,
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
