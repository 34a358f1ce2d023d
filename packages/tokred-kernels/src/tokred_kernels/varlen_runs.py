"""Split position-masked attention into varlen sequences that bottom-right causal makes exact.

flash-attention's varlen kernel masks by index: with `causal=True` query r of a sequence of
Lq queries and Lk keys sees keys `[0, r + Lk - Lq]` (bottom-right aligned). Position
masking is made exact with it as follows. Sort each sample's valid keys by position; query
i then sees exactly the sorted prefix `keys[:e_i + 1]`, e_i being the last sorted key with
position <= its own. Sort the queries by e and cut them into maximal *runs* whose e grow by
exactly 1: a run of L queries ending at e_last is one varlen sequence whose keys are the
prefix `keys[:e_last + 1]`, and bottom-right causal gives its r-th query the prefix up to
`r + e_last + 1 - L = e_r`, as required. Runs of one sample are separate sequences, each
carrying its own copy of its key prefix (cu_seqlens_q and cu_seqlens_k are independent).

Queries that are also keys at their own position (our callers: queries are ACTIVE tokens
and ACTIVE tokens are keys) give the longest runs: consecutive ACTIVE tokens share a run
until an INJECT key sits between them. That is an efficiency property, not a
precondition: a query that sees no key (e = -1) is left out like a padding query (its
output is 0, as in the reference), and any other layout is still exact, in more runs.

Cost: the packed keys number `sum over runs of (e_last + 1) <= runs * Nk` rows. Everything
is computed on the inputs' device with tensor ops; the sizes the kernel needs as host ints
(total rows, number of runs, max lengths) come from one `.tolist()` of five scalars, so
building a plan synchronises once. Positions and validity are the same in every layer of a
reduction stage, so a caller can build the plan once and pass it to each layer's call.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import KernelError

__all__ = ["VarlenPlan", "build_varlen_plan"]


@dataclass(frozen=True)
class VarlenPlan:
    """Where each varlen sequence's queries and keys come from in the (B·N) flat rows."""

    batch: int
    num_queries: int
    """Nq of the inputs the plan was built for (checked when it is used)."""
    num_keys: int
    q_rows: Tensor
    """(total_q,) long flat query indices b * Nq + i, run after run."""
    k_rows: Tensor
    """(total_k,) long flat key indices b * Nk + j, each run's sorted key prefix in turn."""
    cu_seqlens_q: Tensor
    """(runs + 1,) int32 query boundaries of the runs."""
    cu_seqlens_k: Tensor
    """(runs + 1,) int32 key boundaries of the runs."""
    max_seqlen_q: int
    max_seqlen_k: int

    @property
    def num_runs(self) -> int:
        return self.cu_seqlens_q.numel() - 1


def _sorted_queries(
    q_positions: Tensor, k_positions: Tensor, q_valid: Tensor, k_valid: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Key order by position, and queries ordered by the last key they see (used first)."""
    nk = k_positions.shape[1]
    # Invalid keys sort last and above every query position, so no query counts them.
    far = torch.iinfo(torch.long).max
    sorted_kpos, k_order = torch.where(k_valid, k_positions.long(), far).sort(dim=1, stable=True)
    last = torch.searchsorted(sorted_kpos, q_positions.long().contiguous(), right=True) - 1
    used = q_valid & (last >= 0)
    # Unused queries get the key count as their sort key: above every real `last`, so they
    # sort after the used ones, and small enough that `+ 1` below cannot overflow.
    last_sorted, q_order = torch.where(used, last, nk).sort(dim=1, stable=True)
    return k_order, q_order, last_sorted, last_sorted < nk


def _amax0(x: Tensor) -> Tensor:
    """Max of x, 0 when x is empty."""
    return x.amax() if x.numel() else x.new_zeros(())


def _runs(last_sorted: Tensor, used: Tensor) -> tuple[Tensor, Tensor]:
    """(B, Nq) run starts, and each run's length at its last query (0 elsewhere)."""
    b, nq = last_sorted.shape
    # A used query continues the run of its left neighbour iff it sees exactly one more
    # key; used queries lead each row, so a used query's left neighbour is used too.
    cont = F.pad(last_sorted[:, 1:] == last_sorted[:, :-1] + 1, (1, 0), value=False)
    starts = used & ~cont
    ends = used & ~F.pad(cont[:, 1:] & used[:, 1:], (0, 1), value=False)
    col = torch.arange(nq, device=last_sorted.device).expand(b, nq)
    run_start = torch.where(starts, col, -1).cummax(dim=1).values if nq else col
    return starts, torch.where(ends, col - run_start + 1, 0)


def _pack_queries(
    q_order: Tensor, used: Tensor, starts: Tensor, total_q: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Flat row, sample, run and sorted-array index of every packed query, run after run."""
    b, nq = used.shape
    dev = used.device
    counts_q = used.sum(1)
    # Used queries lead each row, so the packed ones are columns [0, counts_q[b]) of row b.
    first = F.pad(counts_q.cumsum(0), (1, 0))[:-1]
    sample = torch.repeat_interleave(torch.arange(b, device=dev), counts_q, output_size=total_q)
    flat = sample * nq + torch.arange(total_q, device=dev) - first[sample]
    q_rows = (q_order + torch.arange(b, device=dev)[:, None] * nq).flatten()[flat]
    run = starts.flatten()[flat].long().cumsum(0) - 1
    return q_rows, sample, run, flat


def _pack_keys(
    k_order: Tensor, len_k: Tensor, sample_of_run: Tensor, total_k: int
) -> tuple[Tensor, Tensor]:
    """Flat key rows of every run's sorted prefix, and the runs' key boundaries."""
    nk = k_order.shape[1]
    dev = k_order.device
    cu_k = F.pad(len_k.cumsum(0), (1, 0))
    run = torch.repeat_interleave(
        torch.arange(len_k.numel(), device=dev), len_k, output_size=total_k
    )
    rank = torch.arange(total_k, device=dev) - cu_k[run]
    sample = sample_of_run[run]
    return sample * nk + k_order[sample, rank], cu_k


def build_varlen_plan(
    q_positions: Tensor, k_positions: Tensor, q_valid: Tensor, k_valid: Tensor
) -> VarlenPlan:
    """The runs of position-contiguous queries of each sample, as varlen sequences.

    Args:
        q_positions, k_positions: (B, Nq) / (B, Nk) integer original positions (keys in any
            order).
        q_valid, k_valid: (B, Nq) / (B, Nk) bool, False on padding.

    Returns:
        A `VarlenPlan`; its q_rows hold every valid query that sees at least one key.
    """
    b, nq = q_positions.shape
    nk = k_positions.shape[1]
    if q_valid.shape != (b, nq) or k_valid.shape != (b, nk) or k_positions.shape[0] != b:
        raise KernelError("positions and validity masks must be (B, Nq) and (B, Nk)")
    if nk == 0:  # no query sees a key: plan nothing (searchsorted needs a key row)
        q_valid = torch.zeros_like(q_valid)
        k_positions, k_valid = k_positions.new_zeros(b, 1), k_valid.new_zeros(b, 1)
    k_order, q_order, last_sorted, used = _sorted_queries(
        q_positions, k_positions, q_valid, k_valid
    )
    starts, run_len_at_end = _runs(last_sorted, used)
    stats = torch.stack(
        [
            used.sum(),
            starts.sum(),
            torch.where(run_len_at_end > 0, last_sorted + 1, 0).sum(),
            _amax0(run_len_at_end),
            _amax0(torch.where(used, last_sorted + 1, 0)),
        ]
    )
    total_q, runs, total_k, max_q, max_k = stats.tolist()  # the one host synchronisation
    q_rows, sample_of_q, run_of_q, flat = _pack_queries(q_order, used, starts, total_q)
    zeros = torch.zeros(runs, dtype=torch.long, device=q_positions.device)
    len_q = zeros.index_add(0, run_of_q, torch.ones_like(run_of_q))
    # A run's last query sees the most keys: its prefix is the run's key sequence.
    len_k = zeros.scatter_reduce(0, run_of_q, last_sorted.flatten()[flat] + 1, "amax")
    sample_of_run = zeros.scatter_reduce(0, run_of_q, sample_of_q, "amax")
    k_rows, cu_k = _pack_keys(k_order, len_k, sample_of_run, total_k)
    return VarlenPlan(
        batch=b,
        num_queries=nq,
        num_keys=nk,
        q_rows=q_rows,
        k_rows=k_rows,
        cu_seqlens_q=F.pad(len_q.cumsum(0), (1, 0)).to(torch.int32),
        cu_seqlens_k=cu_k.to(torch.int32),
        max_seqlen_q=int(max_q),
        max_seqlen_k=int(max_k),
    )
