"""Eager float64 oracles and random attention cases shared by the kernel tests.

The oracles build the full (Nq, Nk) matrices with an explicit mask and torch.softmax: the
obvious, memory-hungry formulation the chunked ops must agree with.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor


@dataclass
class AttnCase:
    q: Tensor
    k: Tensor
    query_valid: Tensor | None
    key_valid: Tensor | None
    query_positions: Tensor | None
    key_positions: Tensor | None

    def masks(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Masks and positions with the defaults filled in (for the oracle)."""
        b, _, nq, _ = self.q.shape
        nk = self.k.shape[2]
        qv = (
            self.query_valid
            if self.query_valid is not None
            else torch.ones(b, nq, dtype=torch.bool)
        )
        kv = self.key_valid if self.key_valid is not None else torch.ones(b, nk, dtype=torch.bool)
        qp = (
            self.query_positions
            if self.query_positions is not None
            else torch.arange(nq).expand(b, nq)
        )
        kp = (
            self.key_positions if self.key_positions is not None else torch.arange(nk).expand(b, nk)
        )
        return qv, kv, qp, kp


def make_case(
    seed: int,
    b: int,
    h: int,
    hkv: int,
    nq: int,
    nk: int,
    d: int,
    padding: str,
    dtype: torch.dtype = torch.float32,
) -> AttnCase:
    """Random q/k with a padding pattern.

    'none': no masks. 'random': independent random masks, default positions.
    'left' / 'right': each sample is a sequence of random length L (possibly 0) padded on
    that side to Nk; queries are its last Nq tokens (a suffix, as in a layer's attention).
    """
    g = torch.Generator().manual_seed(seed)
    q = (torch.randn(b, h, nq, d, generator=g) * 1.5).to(dtype)
    k = (torch.randn(b, hkv, nk, d, generator=g) * 1.5).to(dtype)
    if padding == "none":
        return AttnCase(q, k, None, None, None, None)
    if padding == "random":
        qv = torch.rand(b, nq, generator=g) < 0.7
        kv = torch.rand(b, nk, generator=g) < 0.7
        return AttnCase(q, k, qv, kv, None, None)
    assert nq <= nk, "suffix queries need Nq <= Nk"
    lengths = torch.randint(0, nk + 1, (b,), generator=g)
    lengths[0] = nk  # at least one full sample
    j = torch.arange(nk)[None, :]
    if padding == "left":
        kv = j >= (nk - lengths)[:, None]
        kp = (kv.long().cumsum(1) - 1).clamp(min=0)
    elif padding == "right":
        kv = j < lengths[:, None]
        kp = j.expand(b, nk).clone()
    else:
        raise ValueError(padding)
    return AttnCase(q, k, kv[:, nk - nq :], kv, kp[:, nk - nq :], kp)


def oracle_probs(case: AttnCase, causal: bool, scale: float | None = None) -> tuple[Tensor, Tensor]:
    """(B, H, Nq, Nk) float64 probabilities and the (B, Nq, Nk) visibility mask."""
    qv, kv, qp, kp = case.masks()
    h, hkv, d = case.q.shape[1], case.k.shape[1], case.q.shape[3]
    scale = d**-0.5 if scale is None else scale
    k = case.k.double().repeat_interleave(h // hkv, dim=1)
    scores = case.q.double() @ k.transpose(-1, -2) * scale
    visible = qv[:, :, None] & kv[:, None, :]
    if causal:
        visible = visible & (kp[:, None, :] <= qp[:, :, None])
    p = torch.softmax(scores.masked_fill(~visible[:, None], float("-inf")), dim=-1)
    p = torch.where(visible[:, None].any(-1, keepdim=True), p, torch.zeros((), dtype=p.dtype))
    return p, visible


@pytest.fixture
def attn_case() -> Callable[..., AttnCase]:
    return make_case


@pytest.fixture
def attn_oracle() -> Callable[..., tuple[Tensor, Tensor]]:
    return oracle_probs
