"""attention_importance and topk_per_sample against eager oracles."""

from __future__ import annotations

import pytest
import tokred_kernels as tk
import torch

SHAPES = [
    (1, 1, 1, 1, 1, 4),
    (2, 4, 2, 7, 7, 8),
    (3, 6, 3, 33, 33, 16),
    (2, 4, 1, 5, 12, 8),
]


def oracle_importance(case, query_mask, key_mask, causal, oracle):
    qv, kv, qp, kp = case.masks()
    scored = type(case)(case.q, case.k, query_mask, kv, qp, kp)
    p, visible = oracle(scored, causal)
    h = case.q.shape[1]
    count = (visible.any(-1) & query_mask).sum(-1).double()
    scores = p.sum(dim=(1, 2)) / (h * count).clamp(min=1)[:, None]
    return scores.masked_fill(~key_mask, 0.0)


def masks_for(case, seed, mode):
    """Selected queries (a subset of valid ones) and candidate keys (e.g. image tokens)."""
    g = torch.Generator().manual_seed(seed)
    qv, kv, _, _ = case.masks()
    b, nq = qv.shape
    if mode == "last":  # FastV: only the last valid query of each sample
        idx = torch.where(qv, torch.arange(nq), -1).amax(dim=1)
        query_mask = torch.zeros_like(qv)
        rows = idx >= 0
        query_mask[rows.nonzero().squeeze(1), idx[rows]] = True
    else:
        query_mask = qv & (torch.rand(qv.shape, generator=g) < 0.6)
    key_mask = kv & (torch.rand(kv.shape, generator=g) < 0.5)
    return query_mask, key_mask


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("padding", ["none", "left", "random"])
@pytest.mark.parametrize("mode", ["last", "subset"])
@pytest.mark.parametrize("causal", [True, False])
def test_matches_oracle(shape, padding, mode, causal, attn_case, attn_oracle):
    b, h, hkv, nq, nk, d = shape
    case = attn_case(21, b, h, hkv, nq, nk, d, padding)
    query_mask, key_mask = masks_for(case, 4, mode)
    want = oracle_importance(case, query_mask, key_mask, causal, attn_oracle)
    for chunk_size in (1, 3, nq, nq + 5):
        got = tk.attention_importance(
            case.q,
            case.k,
            query_mask,
            key_mask,
            causal=causal,
            query_positions=case.query_positions,
            key_positions=case.key_positions,
            chunk_size=chunk_size,
            key_valid=case.key_valid,
        )
        assert got.dtype == torch.float32 and got.shape == (b, nk)
        torch.testing.assert_close(got.double(), want, atol=2e-6, rtol=1e-5)
        assert torch.all(got[~key_mask] == 0)


def test_all_valid_keys_as_candidates_sum_to_one(attn_case, attn_oracle):
    case = attn_case(8, 3, 4, 2, 11, 11, 8, "left")
    qv, kv, _, _ = case.masks()
    got = tk.attention_importance(
        case.q,
        case.k,
        qv,
        kv,
        query_positions=case.query_positions,
        key_positions=case.key_positions,
        key_valid=kv,
        chunk_size=4,
    )
    has = qv.any(1)
    torch.testing.assert_close(got.sum(1)[has], torch.ones(int(has.sum())))
    assert torch.all(got[~has] == 0)


def test_candidate_mask_does_not_renormalise(attn_case):
    """A candidate's score is its share of the full softmax, not of the candidates only."""
    case = attn_case(6, 2, 2, 2, 9, 9, 8, "none")
    ones = torch.ones(2, 9, dtype=torch.bool)
    full = tk.attention_importance(case.q, case.k, ones, ones)
    some = ones.clone()
    some[:, ::2] = False
    part = tk.attention_importance(case.q, case.k, ones, some)
    torch.testing.assert_close(part, full.masked_fill(~some, 0.0))


def test_bf16_inputs(attn_case, attn_oracle):
    case = attn_case(2, 2, 4, 2, 15, 15, 8, "left", dtype=torch.bfloat16)
    query_mask, key_mask = masks_for(case, 1, "subset")
    got = tk.attention_importance(
        case.q,
        case.k,
        query_mask,
        key_mask,
        query_positions=case.query_positions,
        key_positions=case.key_positions,
        key_valid=case.key_valid,
        chunk_size=4,
    )
    want = oracle_importance(case, query_mask, key_mask, True, attn_oracle)
    torch.testing.assert_close(got.double(), want, atol=2e-6, rtol=1e-5)


def test_no_selected_query_gives_zero_scores():
    q, k = torch.randn(2, 2, 5, 4), torch.randn(2, 2, 5, 4)
    none = torch.zeros(2, 5, dtype=torch.bool)
    out = tk.attention_importance(q, k, none, ~none)
    assert out.shape == (2, 5) and torch.all(out == 0)


def test_query_mask_required():
    q, k = torch.randn(1, 1, 3, 4), torch.randn(1, 1, 3, 4)
    with pytest.raises(tk.KernelError, match="query_mask"):
        tk.attention_importance(q, k, None, torch.ones(1, 3, dtype=torch.bool))


def oracle_topk(scores, cand, keep):
    out = torch.zeros_like(cand)
    for b in range(scores.shape[0]):
        js = [j for j in range(scores.shape[1]) if cand[b, j]]
        js.sort(key=lambda j: (-scores[b, j].item(), j))
        for j in js[: int(keep[b])]:
            out[b, j] = True
    return out


@pytest.mark.parametrize("n", [1, 7, 33])
@pytest.mark.parametrize("ties", [False, True])
def test_topk_matches_sorted_oracle(n, ties):
    g = torch.Generator().manual_seed(n)
    b = 5
    if ties:  # few distinct values: many exact ties
        scores = torch.randint(0, 3, (b, n), generator=g).float()
    else:
        scores = torch.randn(b, n, generator=g)
    cand = torch.rand(b, n, generator=g) < 0.6
    cand[0] = True
    cand[1] = False
    ncand = cand.sum(1)
    keep = torch.stack(
        [
            torch.tensor(0),
            torch.tensor(2),
            ncand[2] // 2,
            ncand[3],
            ncand[4] + 10,
        ]
    )
    got = tk.topk_per_sample(scores, cand, keep)
    want = oracle_topk(scores, cand, keep)
    assert torch.equal(got, want)
    assert torch.equal(got.sum(1), torch.minimum(keep, ncand))
    assert not torch.any(got & ~cand)


def test_topk_ties_go_to_earlier_positions_and_nan_is_lowest():
    scores = torch.tensor([[1.0, 2.0, 2.0, float("nan"), 2.0, -float("inf")]])
    cand = torch.ones(1, 6, dtype=torch.bool)
    got = tk.topk_per_sample(scores, cand, torch.tensor([2]))
    assert got.tolist() == [[False, True, True, False, False, False]]
    got = tk.topk_per_sample(scores, cand, torch.tensor([5]))
    assert got.tolist() == [[True, True, True, False, True, True]]


def test_topk_rejects_negative_keep():
    with pytest.raises(tk.KernelError, match="keep"):
        tk.topk_per_sample(
            torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.bool), torch.tensor([1, -1])
        )


def test_importance_then_topk_keeps_most_attended_image_tokens():
    """End to end on a constructed case: the keys a query aligns with are kept."""
    d = 8
    k = torch.zeros(1, 1, 6, d)
    k[0, 0, :, :6] = torch.eye(6) * 4
    q = torch.zeros(1, 1, 6, d)
    q[0, 0, 5] = k[0, 0, 1] + k[0, 0, 4]  # last query attends to keys 1 and 4
    image = torch.tensor([[False, True, True, True, True, False]])
    last = torch.zeros(1, 6, dtype=torch.bool)
    last[0, 5] = True
    scores = tk.attention_importance(q, k, last, image)
    kept = tk.topk_per_sample(scores, image, torch.tensor([2]))
    assert kept.tolist() == [[False, True, False, False, True, False]]
