"""The attention-allocation probe (PAPER.md section 1, Eq. 2 before aggregation).

For a batch and its layouts, per layer and head, the attention mass from each query
segment to each key segment, summed over queries and samples, kept apart per task. The
reduced layers hand the probe the very queries and keys they attend with (after norms,
projections, q/k norms and RoPE); the kernels' segment-mass op turns them into mass per
segment chunk by chunk, so no (N x N) attention matrix and no eager attention is ever
built: extra memory is O(N x segments) per layer beyond the model's own.

On an unpatched model the probe patches it with `none` for the duration (exact parity with
the base model, tests/test_parity), so the same code measures a base model and a reduced one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from tokred_core import Segment, Task, TokredError, key_segment_shares, key_segment_shares_by_query
from tokred_kernels import segment_attention_mass, segment_mass_by_query_segment
from torch import nn

from .patch import HANDLE_ATTR, apply_reduction
from .state import ExecutionState

__all__ = ["AttentionProbe", "AllocationResult", "NUM_SEGMENTS"]

# Padding is never a query or a key, so the probe reports the four real segments.
NUM_SEGMENTS = len(Segment) - 1


@dataclass
class AllocationResult:
    """mass[task]: (L, H, Sq, Sk) float64 summed attention mass; queries[task]: (Sq,) counts."""

    mass: dict[Task, torch.Tensor]
    num_samples: dict[Task, int] = field(default_factory=dict)

    def shares(self, task: Task) -> torch.Tensor:
        """(L, Sk): Eq. 2, the share of attention each key segment receives per layer."""
        return key_segment_shares(self.mass[task])

    def shares_by_query(self, task: Task) -> torch.Tensor:
        """(L, Sq, Sk): the same, split by the segment of the query."""
        return key_segment_shares_by_query(self.mass[task])

    def to_dict(self) -> dict:
        names = [s.name.lower() for s in Segment][:NUM_SEGMENTS]
        out = {}
        for task in self.mass:
            shares = self.shares(task)
            out[task.name.lower()] = {
                "segments": names,
                "num_samples": self.num_samples.get(task, 0),
                "shares": shares.tolist(),
                "shares_by_query": self.shares_by_query(task).tolist(),
            }
        return out


class AttentionProbe:
    """Context manager collecting allocation over every forward run inside it.

    with AttentionProbe(model) as probe:
        model(input_ids=ids, attention_mask=mask, tokred_layout=layout)
    result = probe.result()
    """

    def __init__(self, model: nn.Module, chunk_size: int = 64) -> None:
        """chunk_size: queries per chunk of the segment-mass kernel. 64: a finer causal
        prefix and a (B, H, 64, N) block that stays in cache; at the compute-bound bench
        shape a layer's segment mass took 37 ms at 64 against 60 ms at 256."""
        self.model = model
        self.chunk_size = chunk_size
        self._mass: dict[Task, torch.Tensor] = {}
        self._samples: dict[Task, int] = {}
        self._own_handle = None
        self._handle = None

    def __enter__(self) -> AttentionProbe:
        handle = getattr(self.model, HANDLE_ATTR, None)
        if handle is None:
            handle = self._own_handle = apply_reduction(self.model, "none", "shared")
        if handle.probe is not None:
            raise TokredError("an attention probe is already attached to this model")
        handle.probe = self
        self._handle = handle
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.probe = None
        if self._own_handle is not None:
            self._own_handle.undo()
        self._handle = self._own_handle = None

    @torch.no_grad()
    def __call__(
        self,
        state: ExecutionState,
        layer_idx,
        q,
        k,
        q_tok,
        k_tok,
        q_valid,
        k_valid,
        *,
        window,
        scale,
    ) -> None:
        if window is not None and state.layout.seq_len > window:
            raise TokredError(
                f"the attention probe does not model sliding windows (layer {layer_idx} has "
                f"window {window} < sequence length {state.layout.seq_len})"
            )
        segments = state.layout.segments.clamp(max=NUM_SEGMENTS - 1)  # PAD is masked anyway
        q_seg = segments.gather(1, q_tok)
        k_seg = segments.gather(1, k_tok)
        # Every token a query and a key, in order (the `none` plan the probe patches with):
        # the positions are then the kernel's default aranges, which lets it skip the keys
        # a chunk's causal queries cannot see (half the work) without reading them back.
        in_order = state.schedule.pattern(layer_idx).in_order
        mass = segment_attention_mass(
            q.detach(),
            k.detach(),
            k_seg,
            NUM_SEGMENTS,
            query_valid=q_valid,
            key_valid=k_valid,
            causal=True,
            scale=scale,
            query_positions=None if in_order else q_tok,
            key_positions=None if in_order else k_tok,
            chunk_size=self.chunk_size,
        )
        per_sample = segment_mass_by_query_segment(
            mass, q_seg, q_valid, NUM_SEGMENTS
        )  # (B,H,Sq,Sk)
        num_layers = state.plan.num_layers
        for task in Task:
            rows = state.layout.tasks == int(task)
            if not bool(rows.any()):
                continue
            total = per_sample[rows].double().sum(0).cpu()
            if task not in self._mass:
                self._mass[task] = torch.zeros(num_layers, *total.shape, dtype=torch.float64)
            self._mass[task][layer_idx] += total
            if layer_idx == 0:
                self._samples[task] = self._samples.get(task, 0) + int(rows.sum())

    def result(self) -> AllocationResult:
        if not self._mass:
            raise TokredError("the probe saw no forward pass with a tokred_layout")
        return AllocationResult(dict(self._mass), dict(self._samples))
