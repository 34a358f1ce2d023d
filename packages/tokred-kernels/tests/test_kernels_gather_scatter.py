"""TokenIndex and the gather/scatter autograd Functions against Python-loop oracles."""

from __future__ import annotations

import pytest
import tokred_kernels as tk
import torch
from torch.autograd import gradcheck, gradgradcheck


def make_mask(kind: str, b: int, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind == "random":
        mask = torch.rand(b, n, generator=g) < 0.5
        mask[0] = False  # one sample selects nothing
        return mask
    if kind == "empty":
        return torch.zeros(b, n, dtype=torch.bool)
    if kind == "full":
        return torch.ones(b, n, dtype=torch.bool)
    if kind == "single":
        mask = torch.zeros(b, n, dtype=torch.bool)
        mask[b - 1, n - 1] = True
        return mask
    raise ValueError(kind)


MASKS = ["random", "empty", "full", "single"]
SIZES = [(1, 1), (3, 7), (2, 33)]
TRAILING = [(), (5,), (2, 3)]


@pytest.mark.parametrize("kind", MASKS)
@pytest.mark.parametrize("b,n", SIZES)
def test_token_index_fields(kind, b, n):
    mask = make_mask(kind, b, n)
    idx = tk.token_index(mask)
    flat = [bi * n + j for bi in range(b) for j in range(n) if mask[bi, j]]
    counts = mask.sum(1)
    assert idx.indices.tolist() == flat and idx.total == len(flat)
    assert idx.counts.tolist() == counts.tolist()
    assert idx.max_count == (int(counts.max()) if flat else 0)
    assert idx.cu_seqlens.dtype == torch.int32
    assert idx.cu_seqlens.tolist() == [0, *torch.cumsum(counts, 0).tolist()]
    assert idx.padded_indices.shape == (b, idx.max_count) == idx.padded_valid.shape
    for bi in range(b):
        row = [bi * n + j for j in range(n) if mask[bi, j]]
        c = len(row)
        assert idx.padded_valid[bi].tolist() == [True] * c + [False] * (idx.max_count - c)
        assert idx.padded_indices[bi, :c].tolist() == row
    assert idx.batch_ids.tolist() == [f // n for f in flat]
    assert idx.positions.tolist() == [f % n for f in flat]


@pytest.mark.parametrize("kind", MASKS)
@pytest.mark.parametrize("b,n", SIZES)
@pytest.mark.parametrize("trailing", TRAILING)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int64])
def test_forward_matches_loops(kind, b, n, trailing, dtype):
    mask = make_mask(kind, b, n, seed=b + n)
    idx = tk.token_index(mask)
    x = (torch.randn(b, n, *trailing) * 10).to(dtype)
    packed = tk.gather_packed(x, idx)
    rows = [x[bi, j] for bi in range(b) for j in range(n) if mask[bi, j]]
    want = torch.stack(rows) if rows else x.new_zeros((0, *trailing))
    assert packed.dtype == dtype and torch.equal(packed, want)

    new = (torch.randn(idx.total, *trailing) * 10).to(dtype)
    out = tk.scatter_packed(x, new, idx)
    want = x.clone()
    r = 0
    for bi in range(b):
        for j in range(n):
            if mask[bi, j]:
                want[bi, j] = new[r]
                r += 1
    assert torch.equal(out, want)
    assert not torch.equal(out, x) or idx.total == 0 or torch.equal(new, packed)

    padded = tk.pack_to_padded(new, idx)
    assert padded.shape == (b, idx.max_count, *trailing)
    want = torch.zeros_like(padded)
    r = 0
    for bi in range(b):
        for c in range(int(idx.counts[bi])):
            want[bi, c] = new[r]
            r += 1
    assert torch.equal(padded, want)
    assert torch.equal(tk.padded_to_packed(padded, idx), new)


def test_scatter_does_not_modify_base_and_casts_packed():
    x = torch.zeros(2, 3, 4)
    idx = tk.token_index(torch.tensor([[True, False, False], [False, False, True]]))
    out = tk.scatter_packed(x, torch.ones(2, 4, dtype=torch.bfloat16), idx)
    assert torch.all(x == 0) and out.dtype == torch.float32
    assert out.sum().item() == 8.0


def _grad_fns(idx, x, packed, padded):
    return {
        "gather": (lambda x: tk.gather_packed(x, idx), (x,)),
        "scatter": (lambda base, p: tk.scatter_packed(base, p, idx), (x, packed)),
        "pack_to_padded": (lambda p: tk.pack_to_padded(p, idx), (packed,)),
        "padded_to_packed": (lambda p: tk.padded_to_packed(p, idx), (padded,)),
        # the packed rows placed at shuffled, spread-out slots of a larger block
        "place_rows": (
            lambda p: tk.place_rows(p, _spread_slots(idx.total), 2 * idx.total + 3),
            (packed,),
        ),
        # a permutation: every row written
        "place_rows_dense": (
            lambda p: tk.place_rows(
                p, torch.randperm(idx.total, generator=torch.Generator().manual_seed(1)), idx.total
            ),
            (packed,),
        ),
        # full -> packed -> padded -> packed -> full
        "round_trip": (
            lambda base: tk.scatter_packed(
                base,
                tk.padded_to_packed(tk.pack_to_padded(tk.gather_packed(base, idx) * 2, idx), idx),
                idx,
            ),
            (x,),
        ),
    }


def _spread_slots(n):
    """n unique slots in [0, 2n + 3), out of order."""
    return torch.randperm(2 * n + 3, generator=torch.Generator().manual_seed(n))[:n]


def test_place_rows_puts_each_row_at_its_slot_and_zeros_elsewhere():
    src = torch.arange(6.0).view(3, 2)
    slots = torch.tensor([4, 0, 2])
    out = tk.place_rows(src, slots, 5)
    assert torch.equal(out, torch.tensor([[2.0, 3], [0, 0], [4, 5], [0, 0], [0, 1]]))
    assert tk.place_rows(src[:0], slots[:0], 2).abs().sum() == 0
    # A permutation writes every row (the block is not zeroed first): still exact.
    perm = torch.tensor([2, 0, 1])
    assert torch.equal(tk.place_rows(src, perm, 3), src[torch.argsort(perm)])
    big = torch.randn(64, 7)
    shuffle = torch.randperm(64, generator=torch.Generator().manual_seed(0))
    assert torch.equal(tk.place_rows(big, shuffle, 64)[shuffle], big)
    with pytest.raises(tk.KernelError, match="src must have 3 rows"):
        tk.place_rows(src[:2], slots, 5)


#: Every differentiable move of _grad_fns, checked once and twice differentiated.
GRAD_OPS = [
    "gather",
    "scatter",
    "pack_to_padded",
    "padded_to_packed",
    "place_rows",
    "place_rows_dense",
    "round_trip",
]


def _grad_inputs(kind, trailing):
    mask = make_mask(kind, 2, 5, seed=1)
    mask[0, 3] = kind != "single"  # random: both samples select something, unequal counts
    idx = tk.token_index(mask)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, *trailing, dtype=torch.float64, generator=g).requires_grad_()
    packed = torch.randn(idx.total, *trailing, dtype=torch.float64, generator=g)
    padded = torch.randn(2, idx.max_count, *trailing, dtype=torch.float64, generator=g)
    return idx, x, packed.requires_grad_(), padded.requires_grad_()


@pytest.mark.parametrize("op", GRAD_OPS)
@pytest.mark.parametrize("kind", ["random", "full", "single"])
@pytest.mark.parametrize("trailing", TRAILING)
def test_gradcheck(op, kind, trailing):
    fn, inputs = _grad_fns(*_grad_inputs(kind, trailing))[op]
    assert gradcheck(fn, inputs, eps=1e-6, atol=1e-8)


@pytest.mark.parametrize("op", GRAD_OPS)
def test_gradgradcheck(op):
    """Backward is built from the same Functions, so double backward must be right too."""
    fn, inputs = _grad_fns(*_grad_inputs("random", (2,)))[op]
    assert gradgradcheck(fn, inputs, eps=1e-6, atol=1e-8)


def test_scatter_gradients_split_between_base_and_packed():
    mask = torch.tensor([[True, False, True], [False, False, False]])
    idx = tk.token_index(mask)
    base = torch.randn(2, 3, 2, requires_grad=True)
    packed = torch.randn(2, 2, requires_grad=True)
    weight = torch.arange(12.0).view(2, 3, 2)
    (tk.scatter_packed(base, packed, idx) * weight).sum().backward()
    assert torch.equal(base.grad, weight.masked_fill(mask[..., None], 0.0))
    assert torch.equal(packed.grad, weight[mask])


def test_empty_selection_backward():
    idx = tk.token_index(torch.zeros(2, 4, dtype=torch.bool))
    assert idx.total == 0 and idx.max_count == 0
    x = torch.randn(2, 4, 3, requires_grad=True)
    packed = tk.gather_packed(x, idx)
    padded = tk.pack_to_padded(packed * 3, idx)
    assert padded.shape == (2, 0, 3)
    out = tk.scatter_packed(x, tk.padded_to_packed(padded, idx), idx)
    out.sum().backward()
    assert torch.equal(out, x) and torch.equal(x.grad, torch.ones_like(x))


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda idx: tk.gather_packed(torch.zeros(2, 5, 3), idx), "built for"),
        (lambda idx: tk.scatter_packed(torch.zeros(2, 4, 3), torch.zeros(9, 3), idx), "packed"),
        (lambda idx: tk.pack_to_padded(torch.zeros(1, 3), idx), "rows"),
        (lambda idx: tk.padded_to_packed(torch.zeros(2, 9, 3), idx), "max_count"),
        (lambda idx: tk.token_index(torch.zeros(2, 4)), "bool"),
    ],
)
def test_bad_shapes_raise(call, match):
    idx = tk.token_index(torch.tensor([[True, False, True, False], [True, True, True, False]]))
    with pytest.raises(tk.KernelError, match=match):
        call(idx)


def test_a_full_selection_moves_by_views_and_equals_the_copies():
    """Every token selected, in order: the index is an identity and each move is a view,
    with the values a partial selection's copies give on the same rows."""
    full = tk.token_index(torch.ones(2, 5, dtype=torch.bool))
    assert full.identity and not tk.token_index(make_mask("random", 2, 5, seed=1)).identity
    assert not full.permuted(torch.tensor([1, 0, 2, 3, 4, 5, 6, 7, 8, 9])).identity
    x = torch.randn(2, 5, 3)
    packed = tk.gather_packed(x, full)
    assert packed.data_ptr() == x.data_ptr() and torch.equal(packed, x.reshape(10, 3))
    padded = tk.pack_to_padded(packed, full)
    assert torch.equal(padded, x) and torch.equal(tk.padded_to_packed(padded, full), packed)
    new = torch.randn(10, 3)
    assert torch.equal(tk.scatter_packed(x, new, full), new.view(2, 5, 3))
