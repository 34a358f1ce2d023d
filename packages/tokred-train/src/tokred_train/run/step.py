"""One micro-batch -> summed loss per task, for each model family's loss path.

Why a module: DistributedDataParallel synchronises gradients only for what runs inside
the forward of the module it wraps. Every path trains through the model's submodules (the
decoder, then the output head), not through its `forward`, so the training loop wraps this
step, not the model, and every path is DDP-safe alike.

Why not the model's `forward`: it computes logits at every position, (B, N, vocab) floats
(for Emu3 at 512 px, 4160 image tokens x 184k ids, about 3 GB per sample in float32),
where the loss needs them only at the targets; and some families edit their logits
(Chameleon's forward pins its image tokens to the dtype's minimum, which makes image
generation untrainable through it).

Paths (chosen by the family's ModelIO, see tokred_train.families):
- "causal_lm": the reduction-patched decoder (`tokred_layout=...`) -> last hidden states
  -> the output head (`get_output_embeddings()`) at the target positions only -> the
  cross-entropy (losses.py). Equal to the model's forward plus the loss on its logits.
- "janus": `tokred_models.janus_generation.janus_hidden_states` over the unified batch
  (SigLIP features at understanding placeholders, aligned code embeddings at generation
  image positions), then `lm_head` on text targets and `generation_head` on code targets.

Targets are found on the host before the batch reaches the device (`batch_targets`), so
the step never synchronises with the device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from tokred_core import TokredError
from tokred_models import patched_model, reduction_handle
from torch import nn

from ..data.collate import IGNORE_INDEX
from ..data.model_io import LOSS_PATHS
from .losses import LossTargets, ce_sums, head_logits, kl_sums, loss_targets

__all__ = ["BatchTargets", "DISTILL_KEY", "PREPARED_KEY", "TrainStep", "batch_targets"]

#: Where a collated batch holds its prepared reduction step (ReductionHandle.prepare),
#: built on the host where the batch was collated; without it the layout is planned in
#: the forward.
PREPARED_KEY = "tokred_step"
#: Where a batch of a distilling full step (full_steps.py) holds its reduced pass's
#: prepared step.
DISTILL_KEY = "tokred_distill_step"


@dataclass
class BatchTargets:
    """The targets of one batch, per output head."""

    text: LossTargets
    """Targets of the language-model head (all targets on the causal_lm path)."""
    image: LossTargets | None = None
    """Targets of a separate image head (the janus path's generation_head)."""

    @property
    def counts(self) -> tuple[int, int]:
        """Targets per task (understanding, generation)."""
        u, g = self.text.counts
        if self.image is not None:
            u, g = u + self.image.counts[0], g + self.image.counts[1]
        return u, g

    def to(self, device: torch.device) -> BatchTargets:
        return BatchTargets(
            self.text.to(device), None if self.image is None else self.image.to(device)
        )


def batch_targets(batch: dict[str, Any], loss_path: str) -> BatchTargets:
    """The targets of a collated batch for `loss_path` (on the CPU)."""
    labels, tasks = batch["labels"], batch["layout"].tasks
    if loss_path == "causal_lm":
        return BatchTargets(loss_targets(labels, tasks))
    if loss_path == "janus":
        codes = batch["image_code_mask"]
        ignore = torch.full_like(labels, IGNORE_INDEX)
        return BatchTargets(
            loss_targets(torch.where(codes, ignore, labels), tasks),
            loss_targets(torch.where(codes, labels, ignore), tasks),
        )
    raise TokredError(f"loss path {loss_path!r}: expected one of {', '.join(LOSS_PATHS)}")


class TrainStep(nn.Module):
    """forward(batch, targets) -> (2,) float32 summed losses (understanding, generation).

    `model`: the Hugging Face model itself, reduction-patched (LoRA layers, if any, are
    injected into it in place, so its submodules run the adapters); not a peft wrapper.

    A batch that holds a second prepared step under DISTILL_KEY (a distilling full step,
    full_steps.py) runs it too, and the result is (4,): the cross-entropy sums of the
    batch's own (full) pass, then `distill` x T^2 x the summed KL(full || reduced) of the
    target tokens per task, the full pass's distribution held fixed (Hinton et al.'s
    temperature scaling, so the term's gradient does not shrink as T grows).
    """

    def __init__(
        self,
        model: nn.Module,
        loss_path: str = "causal_lm",
        distill: float = 0.0,
        distill_temperature: float = 1.0,
    ):
        super().__init__()
        if loss_path not in LOSS_PATHS:
            raise TokredError(f"loss path {loss_path!r}: expected one of {', '.join(LOSS_PATHS)}")
        if type(model).__name__.startswith("Peft"):
            raise TokredError("TrainStep takes the Hugging Face model inside the peft wrapper")
        self.model = model
        self.loss_path = loss_path
        self.distill = distill
        self.distill_temperature = distill_temperature
        # Submodules of `model`, kept in a tuple so they are not registered twice.
        self._parts = (_decoder(model), model.get_output_embeddings())

    def forward(self, batch: dict[str, Any], targets: BatchTargets) -> torch.Tensor:
        device = targets.text.index.device
        inputs = (
            batch["input_ids"].to(device, non_blocking=True),
            batch["attention_mask"].to(device, non_blocking=True),
        )
        hidden = self._hidden(batch, batch.get(PREPARED_KEY, batch["layout"]), *inputs)
        student_step = batch.get(DISTILL_KEY)
        student = None if student_step is None else self._hidden(batch, student_step, *inputs)
        sums = torch.zeros(2, dtype=torch.float32, device=device)
        kl = torch.zeros_like(sums)
        for head, part in self._heads(targets):
            logits = head_logits(hidden, part, head)
            sums = sums + ce_sums(logits, part)
            if student is not None:
                taught = head_logits(student, part, head)
                kl = kl + kl_sums(logits.detach(), taught, part, self.distill_temperature)
        if student is None:
            return sums
        return torch.cat([sums, kl * (self.distill * self.distill_temperature**2)])

    def _heads(self, targets: BatchTargets) -> list[tuple[nn.Module, LossTargets]]:
        """(output head, its targets) of the loss path."""
        heads = [(self._parts[1], targets.text)]
        if self.loss_path == "janus" and targets.image is not None:
            # On zero rows without generation targets: every process runs the same modules.
            heads.append((self.model.model.generation_head, targets.image))
        return heads

    def _hidden(self, batch, layout, input_ids, attention_mask) -> torch.Tensor:
        """The decoder's last hidden states of the batch under `layout` (a TokenLayout or
        a prepared step)."""
        if self.loss_path == "causal_lm":
            out = self._parts[0](
                input_ids=input_ids,
                attention_mask=attention_mask,
                tokred_layout=layout,
                use_cache=False,
            )
            return out.last_hidden_state
        from tokred_models.janus_generation import janus_hidden_states

        device = input_ids.device
        pixel_values = batch.get("pixel_values")
        if pixel_values is not None:
            pixel_values = pixel_values.to(device, non_blocking=True)
        return janus_hidden_states(
            self.model,
            input_ids,
            batch["image_code_mask"].to(device, non_blocking=True),
            attention_mask,
            pixel_values,
            layout=layout,
        )


def _decoder(model: nn.Module) -> nn.Module:
    """The module `apply_reduction` patched: the decoder stack under the LM head."""
    patched = patched_model(model)
    return reduction_handle(patched).adapter.decoder(patched)
