"""tile_views and join_tiles against plain narrow / pad / cat, values and gradients, on odd
shapes, with an unused tile (its gradient absent) and tiles trimmed to nothing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tokred_models.bucket_tiles import join_tiles, tile_views

CASES = [  # spans of a batch, lengths along dim 2 (of 7)
    ([(0, 2), (2, 1), (3, 2)], [7, 3, 5]),
    ([(0, 1), (1, 4)], [1, 6]),
    ([(0, 3), (3, 2)], [0, 7]),  # a tile trimmed to nothing
]


def _reference_views(x, spans, lengths, dim):
    return [x.narrow(0, f, c).narrow(dim, 0, n) for (f, c), n in zip(spans, lengths, strict=True)]


@pytest.mark.parametrize("spans,lengths", CASES)
@pytest.mark.parametrize("unused", [None, 1])
def test_tile_views_equal_narrow_and_their_gradient(spans, lengths, unused):
    gen = torch.Generator().manual_seed(len(spans))
    x = torch.randn(5, 3, 7, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    got = tile_views(x, spans, lengths, 2)
    want = _reference_views(x, spans, lengths, 2)
    for g, w in zip(got, want, strict=True):
        assert torch.equal(g, w) and g.data_ptr() == w.data_ptr()  # views, not copies
    weights = [torch.randn(w.shape, generator=gen, dtype=w.dtype) for w in want]
    used = [i for i in range(len(spans)) if i != unused]
    (g_got,) = torch.autograd.grad(sum((got[i] * weights[i]).sum() for i in used), x)
    (g_want,) = torch.autograd.grad(sum((want[i] * weights[i]).sum() for i in used), x)
    torch.testing.assert_close(g_got, g_want, rtol=0, atol=0)


@pytest.mark.parametrize("spans,lengths", CASES)
def test_join_tiles_equals_pad_and_cat_and_its_gradient(spans, lengths):
    gen = torch.Generator().manual_seed(7)
    parts = [
        torch.randn(c, 3, n, 4, generator=gen, dtype=torch.float64, requires_grad=True)
        for (_, c), n in zip(spans, lengths, strict=True)
    ]
    got = join_tiles(parts, spans, 7, 2)
    want = torch.cat([F.pad(p, (0, 0, 0, 7 - p.shape[2])) for p in parts])
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    weight = torch.randn(want.shape, generator=gen, dtype=want.dtype).transpose(1, 2)
    weight = weight.contiguous().transpose(1, 2)  # a non-contiguous incoming gradient
    got_g = torch.autograd.grad((got * weight).sum(), parts)
    want_g = torch.autograd.grad((want * weight).sum(), parts)
    for g, w in zip(got_g, want_g, strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=0)


def test_tiles_pass_gradcheck():
    x = torch.randn(4, 2, 5, 3, dtype=torch.float64, requires_grad=True)
    spans, lengths = [(0, 3), (3, 1)], [4, 2]
    assert torch.autograd.gradcheck(lambda t: tile_views(t, spans, lengths, 2), (x,))
    parts = [
        torch.randn(c, 2, n, 3, dtype=torch.float64, requires_grad=True)
        for (_, c), n in zip(spans, lengths, strict=True)
    ]
    assert torch.autograd.gradcheck(lambda *p: join_tiles(p, spans, 5, 2), tuple(parts))


def test_views_without_grad_are_plain_narrows():
    x = torch.randn(3, 2, 4, 1)
    (a, b) = tile_views(x, [(0, 1), (1, 2)], [4, 2], 2)
    assert a.grad_fn is None and b.data_ptr() == x[1:, :, :2].data_ptr()


@pytest.mark.parametrize("spans", [[(0, 2), (3, 2)], [(1, 4)], [(0, 2), (2, 2)], [(0, 5), (5, 0)]])
def test_spans_that_do_not_tile_the_batch_are_refused(spans):
    with pytest.raises(ValueError, match="do not tile a batch of 5"):
        tile_views(torch.zeros(5, 1, 3, 1), spans, [1] * len(spans), 2)
