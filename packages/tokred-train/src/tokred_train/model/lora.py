"""Full fine-tuning, LoRA and QLoRA, applied after reduction has patched the model.

Order (model_builder.py): load -> (4-bit) -> apply_reduction, which adds the image
projection sets `self_attn.image_proj.<set>.{q,k,v}_proj` -> peft. Peft runs last so its
target names (`q_proj`, ...) also match the image projections, whose leaf names were chosen
for that; `apply_lora` checks that every image projection the targets name really got an
adapter. With a 4-bit base the image projections are 4-bit copies too: frozen, adapted
by LoRA like the text projections.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

from tokred_core import TokredError
from tokred_models.routing import ROUTER_ATTR
from torch import nn

from ..config import LoraConfig

__all__ = ["LoraReport", "apply_lora", "prepare_4bit_for_training", "image_projection_names"]


@dataclass
class LoraReport:
    adapted: list[str] = field(default_factory=list)
    """Names (in the base model) of the modules that got LoRA adapters."""
    image_projections: list[str] = field(default_factory=list)
    """The adapted modules that are image projections."""
    frozen_image_projections: list[str] = field(default_factory=list)
    """Image projections the targets leave out (frozen copies of the text projections)."""
    saved_modules: list[str] = field(default_factory=list)
    """Modules trained in full (lora.modules_to_save), wrapped by peft."""
    routers: list[str] = field(default_factory=list)
    """Router parameters (the router policy's), trained in full."""


def image_projection_names(model: nn.Module) -> list[str]:
    """Names of the image projection modules apply_reduction added."""
    from tokred_models.projections import IMAGE_PROJ_ATTR, PROJ_NAMES

    marker = f".{IMAGE_PROJ_ATTR}."
    return [
        name
        for name, _ in model.named_modules()
        if marker in name and name.rsplit(".", 1)[-1] in PROJ_NAMES
    ]


def prepare_4bit_for_training(model: nn.Module) -> None:
    """peft's prepare_model_for_kbit_training (freezes the base, casts non-4-bit parameters
    to float32); gradient checkpointing is enabled separately, without re-entrancy."""
    from peft import prepare_model_for_kbit_training

    prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def _peft_config(cfg: LoraConfig):
    from peft import LoraConfig as PeftLoraConfig

    return PeftLoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules),
        modules_to_save=list(cfg.modules_to_save) or None,
        bias="none",
        task_type="CAUSAL_LM",
    )


def apply_lora(model: nn.Module, cfg: LoraConfig) -> tuple[nn.Module, LoraReport]:
    """Wrap `model` (already patched by apply_reduction) with peft LoRA adapters."""
    from peft import get_peft_model
    from peft.tuners.lora import LoraLayer
    from peft.tuners.tuners_utils import check_target_module_exists

    peft_cfg = _peft_config(cfg)
    image_names = image_projection_names(model)
    expected = [n for n in image_names if check_target_module_exists(peft_cfg, n)]
    try:
        with warnings.catch_warnings():
            # peft still calls transformers' deprecated `is_gradient_checkpointing`.
            warnings.filterwarnings("ignore", category=FutureWarning)
            wrapped = get_peft_model(model, peft_cfg)
    except ValueError as exc:  # e.g. no module matches the targets
        raise TokredError(f"lora.target_modules={cfg.target_modules}: {exc}") from None
    base = wrapped.get_base_model()
    report = LoraReport()
    # The router policy's routers (tokred_models.routing) are new weights with no base
    # to adapt: peft froze them with the rest, they train in full.
    for name, p in base.named_parameters():
        if f".{ROUTER_ATTR}." in name:
            p.requires_grad_(True)
            report.routers.append(name)
    for name, module in base.named_modules():
        if isinstance(module, LoraLayer):
            report.adapted.append(name)
    adapted = set(report.adapted)
    report.image_projections = [n for n in expected if n in adapted]
    missing = [n for n in expected if n not in adapted]
    if missing:
        raise TokredError(
            f"peft left {len(missing)} image projection(s) that lora.target_modules names "
            f"without an adapter (first: {missing[0]})"
        )
    saved = [n for n, m in base.named_modules() if type(m).__name__ == "ModulesToSaveWrapper"]
    for wanted in cfg.modules_to_save:
        if not any(n == wanted or n.endswith("." + wanted) for n in saved):
            raise TokredError(f"lora.modules_to_save: no module named {wanted!r} in the model")
    report.saved_modules = saved
    report.frozen_image_projections = [n for n in image_names if n not in adapted]
    if report.frozen_image_projections:
        warnings.warn(
            f"lora.target_modules={cfg.target_modules} leaves {len(report.frozen_image_projections)} "
            "image projection(s) frozen: they stay copies of the text projections",
            stacklevel=2,
        )
    return wrapped, report
