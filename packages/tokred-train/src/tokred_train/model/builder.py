"""Build the model a run trains: load -> (4-bit) -> reduction patch -> (LoRA) -> checks.

- kind tiny: `tokred_models.tiny` Llama with vocab_size = len(vocab), seeded by run.seed;
  QLoRA quantizes its decoder linears in place (quantize.py), so QLoRA runs on the CPU.
- kind hf: `from_pretrained` from the local folder model.path, with the class named in its
  config.json (`architectures`), a BitsAndBytesConfig for QLoRA, `dtype` and
  `attn_implementation` from the config.
Then `tokred_models.apply_reduction` with the per-task policies and sharing (adds the image
projection sets), a dry plan on a two-task layout so a policy that does not fit the model
(e.g. too many HMGen shallow layers) fails here rather than at step 1, gradient
checkpointing (use_reentrant=False) and, last, peft (lora.py).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tokred_core import TokredError
from tokred_models import ReductionHandle, apply_reduction
from torch import nn

from ..config import TrainConfig, check_policies_fit
from ..families import hf_model_type
from .lora import LoraReport, apply_lora, prepare_4bit_for_training
from .quantize import keep_4bit_layout, quantize_linears_4bit_

__all__ = ["BuiltModel", "build_model", "load_base_model", "resolve_device", "count_parameters"]

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class BuiltModel:
    model: nn.Module
    """What the loop calls: the patched model, peft-wrapped when LoRA is on."""
    base: nn.Module
    """The patched Hugging Face model inside it."""
    handle: ReductionHandle
    model_type: str
    num_layers: int
    trainable_parameters: int
    total_parameters: int
    quantized_modules: list[str] = field(default_factory=list)
    lora: LoraReport | None = None


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """run.device -> a torch.device (auto: this rank's GPU when CUDA is available)."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TokredError(f"run.device={name!r} but CUDA is not available; use run.device=cpu")
    return device


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; a 4-bit weight counts its unpacked elements."""
    trainable = total = 0
    for p in model.parameters():
        n = p.numel()
        if p.__class__.__name__ == "Params4bit" and getattr(p, "quant_state", None) is not None:
            n = int(torch.Size(p.quant_state.shape).numel())
        total += n
        if p.requires_grad:
            trainable += n
    return trainable, total


def _hf_model_class(folder: Path):
    import transformers

    data = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    for arch in data.get("architectures") or ():
        cls = getattr(transformers, arch, None)
        if cls is not None:
            return cls
    return transformers.AutoModelForCausalLM


def _skip_patterns(names: list[str]) -> list[str] | None:
    """transformers matches a skip pattern from the start of a module's full name (or as a
    suffix of it), so a name like "generation_head" becomes the regex "(?:.*\\.)?generation_head",
    which also matches its submodules."""
    if not names:
        return None
    return [rf"(?:.*\.)?{re.escape(n)}" for n in ("lm_head", *names)]


def _load_hf(config: TrainConfig, device: torch.device) -> nn.Module:
    mcfg, lcfg = config.model, config.lora
    folder = Path(mcfg.path).expanduser()
    hf_model_type(folder)  # clear error when the folder holds no model
    on_cuda = device.type == "cuda"
    if mcfg.dtype == "auto":
        # bfloat16 only for a frozen base on CUDA: full fine-tuning keeps float32 master
        # weights, since AdamW updates of ~1e-5 vanish below bfloat16's resolution.
        dtype = torch.bfloat16 if on_cuda and lcfg.enabled else torch.float32
    else:
        dtype = _DTYPES[mcfg.dtype]
    kwargs: dict = {"dtype": dtype, "attn_implementation": mcfg.attn_implementation}
    if lcfg.quantize_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=lcfg.quant_type,
            bnb_4bit_compute_dtype=dtype,
            bnb_4bit_use_double_quant=lcfg.double_quant,
            # Fully trained modules must keep float weights (None: transformers' defaults).
            llm_int8_skip_modules=_skip_patterns(lcfg.modules_to_save),
        )
        kwargs["device_map"] = {"": device}
    cls = _hf_model_class(folder)
    try:
        model = cls.from_pretrained(str(folder), **kwargs)
    except (OSError, ValueError) as exc:
        raise TokredError(
            f"model.path={mcfg.path!r}: could not load {cls.__name__}: {' '.join(str(exc).split())}"
        ) from None
    if not lcfg.quantize_4bit:
        model.to(device)
    return model


def _build_tiny(
    config: TrainConfig, vocab_size: int, device: torch.device
) -> tuple[nn.Module, list[str]]:
    from tokred_models.tiny import TinyUnifiedConfig, build_tiny_unified_model

    tiny = TinyUnifiedConfig.from_fields(config.model, vocab_size, seed=config.run.seed)
    model = build_tiny_unified_model(tiny)
    quantized: list[str] = []
    if config.lora.quantize_4bit:
        prefix = "model.layers"
        quantized = [
            f"{prefix}.{n}"
            for n in quantize_linears_4bit_(
                model.model.layers, config.lora.quant_type, torch.float32
            )
        ]
    return model.to(device), quantized  # .to() packs the 4-bit weights


def load_base_model(
    config: TrainConfig, vocab_size: int | None, device: torch.device
) -> tuple[nn.Module, list[str]]:
    """The unpatched model on `device` (4-bit when lora.quantize_4bit) and the names of the
    modules quantized in place (tiny only)."""
    if config.model.kind == "tiny":
        if vocab_size is None:
            raise TokredError("the tiny model needs the vocabulary size of the data")
        return _build_tiny(config, vocab_size, device)
    return _load_hf(config, device), []


def _dry_plan(config: TrainConfig, handle: ReductionHandle) -> None:
    """Plan a small two-task layout so a policy that cannot apply fails before training."""
    check_policies_fit(config.reduction, handle.num_layers)


def build_model(
    config: TrainConfig, vocab_size: int | None = None, device: torch.device | str = "cpu"
) -> BuiltModel:
    """The trainable model of `config` (see the module docstring for the order)."""
    device = torch.device(device)
    base, quantized = load_base_model(config, vocab_size, device)
    model_type = getattr(base.config, "model_type", type(base).__name__)
    if getattr(base.config, "use_cache", None) is not None:
        base.config.use_cache = False
    if config.lora.quantize_4bit:
        keep_4bit_layout(base)
        prepare_4bit_for_training(base)
    elif config.lora.enabled:
        base.requires_grad_(False)
    handle = apply_reduction(base, config.reduction.task_policies(), config.reduction.sharing)
    _dry_plan(config, handle)
    if config.run.gradient_checkpointing:
        if not getattr(base, "supports_gradient_checkpointing", False):
            raise TokredError(
                f"run.gradient_checkpointing: {type(base).__name__} does not support it"
            )
        # transformers 5.23 renamed it (the old name warns); same layer flags either way.
        base.activation_checkpointing_enable(
            activation_checkpointing_kwargs={"use_reentrant": False}
        )
    report = None
    model: nn.Module = base
    if config.lora.enabled:
        model, report = apply_lora(base, config.lora)
    else:
        base.requires_grad_(True)
    model.train()
    trainable, total = count_parameters(model)
    if trainable == 0:
        raise TokredError("the model has no trainable parameters; check lora.target_modules")
    return BuiltModel(
        model=model,
        base=base,
        handle=handle,
        model_type=model_type,
        num_layers=handle.num_layers,
        trainable_parameters=trainable,
        total_parameters=total,
        quantized_modules=quantized,
        lora=report,
    )
