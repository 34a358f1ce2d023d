"""The causal-LM loss of a mixed batch, split by task.

Position t predicts token t+1. The target positions are found on the host from the
collated labels (they are known before the batch reaches the device), so the loss picks
its rows with an index tensor and never synchronises with the device; logits are upcast
to float32 only at those rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tokred_core import Task
from torch import nn

from ..data.collate import IGNORE_INDEX

__all__ = [
    "LossTargets",
    "ce_sums",
    "head_logits",
    "head_loss_sums",
    "kl_sums",
    "loss_targets",
    "task_loss_sums",
]


@dataclass
class LossTargets:
    index: torch.Tensor
    """(K,) long: flat positions b * N + t, into the (B * N) logits, of the predicting tokens."""
    labels: torch.Tensor
    """(K,) long: the token each of those positions must predict."""
    tasks: torch.Tensor
    """(K,) long: the task of each target."""
    counts: tuple[int, int]
    """Targets per task (understanding, generation), known on the host."""

    def to(self, device: torch.device) -> LossTargets:
        return LossTargets(
            self.index.to(device, non_blocking=True),
            self.labels.to(device, non_blocking=True),
            self.tasks.to(device, non_blocking=True),
            self.counts,
        )


def loss_targets(labels: torch.Tensor, tasks: torch.Tensor) -> LossTargets:
    """From (B, N) labels (IGNORE_INDEX off the targets) and (B,) tasks, on the CPU."""
    n = labels.shape[1]
    shifted = labels[:, 1:]
    rows, cols = (shifted != IGNORE_INDEX).nonzero(as_tuple=True)
    index = rows * n + cols
    target_tasks = tasks.index_select(0, rows)
    n_gen = int((target_tasks == Task.GENERATION).sum())
    return LossTargets(index, shifted[rows, cols], target_tasks, (len(index) - n_gen, n_gen))


def head_logits(
    states: torch.Tensor, targets: LossTargets, head: nn.Module | None = None
) -> torch.Tensor:
    """(K, vocab) logits at the target rows: `states` (B, N, D) are logits when `head` is
    None, else hidden states that `head` turns into logits at those rows only, so the
    full (B, N, vocab) logits are never built."""
    rows = states.reshape(-1, states.shape[-1]).index_select(0, targets.index)
    return rows if head is None else head(rows)


def ce_sums(logits: torch.Tensor, targets: LossTargets) -> torch.Tensor:
    """(2,) float32: summed cross-entropy of the understanding and generation targets."""
    ce = F.cross_entropy(logits.float(), targets.labels, reduction="none")
    return torch.zeros(2, device=ce.device, dtype=ce.dtype).index_add_(0, targets.tasks, ce)


def kl_sums(
    teacher: torch.Tensor, student: torch.Tensor, targets: LossTargets, temperature: float = 1.0
) -> torch.Tensor:
    """(2,) float32: per task, the summed KL(teacher || student) of the targets' softmax
    distributions at `temperature`, from (K, vocab) logits of each."""
    log_t = F.log_softmax(teacher.float() / temperature, dim=-1)
    log_s = F.log_softmax(student.float() / temperature, dim=-1)
    kl = (log_t.exp() * (log_t - log_s)).sum(-1)
    return torch.zeros(2, device=kl.device, dtype=kl.dtype).index_add_(0, targets.tasks, kl)


def head_loss_sums(
    states: torch.Tensor, targets: LossTargets, head: nn.Module | None = None
) -> torch.Tensor:
    """(2,) float32: summed cross-entropy of the understanding and generation targets.

    states (B, N, D): logits when `head` is None, else hidden states that `head` turns into
    logits at the target rows only (the LM head, or Janus's generation_head), so the
    full (B, N, vocab) logits are never built.
    """
    return ce_sums(head_logits(states, targets, head), targets)


def task_loss_sums(logits: torch.Tensor, targets: LossTargets) -> torch.Tensor:
    """(2,) float32: summed cross-entropy of the understanding and generation targets."""
    return head_loss_sums(logits, targets)
