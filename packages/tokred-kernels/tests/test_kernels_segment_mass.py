"""segment_attention_mass / segment_mass_by_query_segment against the eager float64 oracle."""

from __future__ import annotations

import pytest
import tokred_kernels as tk
import torch
from tokred_kernels import segment_mass as ref

# (B, H, Hkv, Nq, Nk, D): single token, odd sizes, GQA groups of 2 and 4, MQA, Nq != Nk.
SHAPES = [
    (1, 1, 1, 1, 1, 4),
    (2, 4, 2, 7, 7, 8),
    (3, 6, 3, 33, 33, 16),
    (2, 4, 1, 5, 12, 8),
    (2, 8, 2, 9, 9, 6),
]
SUFFIX_SHAPES = [s for s in SHAPES if s[3] <= s[4]]
CASES = [(s, p) for s in SHAPES for p in ("none", "random")] + [
    (s, p) for s in SUFFIX_SHAPES for p in ("left", "right")
]


def oracle_mass(case, causal, num_segments, segments, scale=None, oracle=None):
    p, _ = oracle(case, causal, scale)
    _, kv, _, _ = case.masks()
    cols = [
        (p * ((segments == s) & kv)[:, None, None, :].double()).sum(-1) for s in range(num_segments)
    ]
    return torch.stack(cols, dim=-1)


def random_segments(seed, b, nk, num_segments):
    return torch.randint(0, num_segments, (b, nk), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("shape,padding", CASES)
@pytest.mark.parametrize("causal", [True, False])
def test_matches_oracle(shape, padding, causal, attn_case, attn_oracle):
    b, h, hkv, nq, nk, d = shape
    case = attn_case(11, b, h, hkv, nq, nk, d, padding)
    segments = random_segments(3, b, nk, 4)
    want = oracle_mass(case, causal, 4, segments, oracle=attn_oracle)
    # Chunks smaller than, equal to and larger than Nq: the result must not change.
    for chunk_size in (1, 4, nq, nq + 7):
        got = tk.segment_attention_mass(
            case.q,
            case.k,
            segments,
            4,
            query_valid=case.query_valid,
            key_valid=case.key_valid,
            causal=causal,
            query_positions=case.query_positions,
            key_positions=case.key_positions,
            chunk_size=chunk_size,
        )
        assert got.dtype == torch.float32 and got.shape == (b, h, nq, 4)
        torch.testing.assert_close(got.double(), want, atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("padding", ["left", "random"])
def test_rows_sum_to_one_or_zero(padding, attn_case, attn_oracle):
    case = attn_case(5, 3, 4, 2, 13, 13, 8, padding)
    segments = random_segments(1, 3, 13, 5)
    got = tk.segment_attention_mass(
        case.q,
        case.k,
        segments,
        5,
        case.query_valid,
        case.key_valid,
        query_positions=case.query_positions,
        key_positions=case.key_positions,
        chunk_size=4,
    )
    _, visible = attn_oracle(case, True)
    has_key = visible.any(-1)[:, None, :].expand(-1, 4, -1)
    sums = got.sum(-1)
    assert has_key.any() and (~has_key).any()
    torch.testing.assert_close(sums[has_key], torch.ones_like(sums[has_key]))
    assert torch.all(got[~has_key] == 0)


def test_result_does_not_depend_on_chunk_size(attn_case):
    case = attn_case(2, 2, 4, 2, 33, 33, 16, "left")
    segments = random_segments(0, 2, 33, 3)
    outs = [
        tk.segment_attention_mass(
            case.q,
            case.k,
            segments,
            3,
            case.query_valid,
            case.key_valid,
            query_positions=case.query_positions,
            key_positions=case.key_positions,
            chunk_size=c,
        )
        for c in (1, 2, 32, 33, 34, 256)
    ]
    for out in outs[1:]:
        torch.testing.assert_close(out, outs[0], atol=1e-6, rtol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_inputs_computed_in_float32(dtype, attn_case, attn_oracle):
    case = attn_case(7, 2, 4, 2, 17, 17, 8, "left", dtype=dtype)
    segments = random_segments(2, 2, 17, 4)
    got = tk.segment_attention_mass(
        case.q,
        case.k,
        segments,
        4,
        case.query_valid,
        case.key_valid,
        query_positions=case.query_positions,
        key_positions=case.key_positions,
        chunk_size=5,
    )
    assert got.dtype == torch.float32
    # The oracle sees exactly the rounded low-precision values, so only float32 error remains.
    want = oracle_mass(case, True, 4, segments, oracle=attn_oracle)
    torch.testing.assert_close(got.double(), want, atol=2e-6, rtol=1e-5)
    # And it stays close to the full-precision answer.
    full = attn_case(7, 2, 4, 2, 17, 17, 8, "left")
    want_full = oracle_mass(full, True, 4, segments, oracle=attn_oracle)
    torch.testing.assert_close(got.double(), want_full, atol=0.1, rtol=0)


def test_gqa_query_head_reads_kv_head_h_div_group(attn_case):
    case = attn_case(3, 1, 4, 2, 6, 6, 8, "none")
    segments = torch.tensor([[0, 1, 0, 1, 0, 1]])
    base = tk.segment_attention_mass(case.q, case.k, segments, 2, causal=False)
    k = case.k.clone()
    k[:, 1] = torch.randn_like(k[:, 1]) * 3
    changed = tk.segment_attention_mass(case.q, k, segments, 2, causal=False)
    diff = (changed - base).abs().amax(dim=(0, 2, 3))
    assert torch.all(diff[:2] == 0)  # heads 0, 1 read kv head 0
    assert torch.all(diff[2:] > 1e-3)  # heads 2, 3 read kv head 1


def test_scale_and_padding_segment_ids_ignored(attn_case, attn_oracle):
    case = attn_case(9, 2, 2, 2, 7, 7, 4, "right")
    segments = random_segments(4, 2, 7, 3)
    segments[~case.key_valid] = 99  # ids of padding keys are ignored
    got = tk.segment_attention_mass(
        case.q, case.k, segments, 3, case.query_valid, case.key_valid, scale=0.3
    )
    clean = segments.masked_fill(~case.key_valid, 0)
    want = oracle_mass(case, True, 3, clean, scale=0.3, oracle=attn_oracle)
    torch.testing.assert_close(got.double(), want, atol=2e-6, rtol=1e-5)


def test_empty_sequences_give_zero_shaped_results():
    q = torch.randn(2, 2, 0, 4)
    k = torch.randn(2, 1, 5, 4)
    assert tk.segment_attention_mass(q, k, torch.zeros(2, 5, dtype=torch.long), 3).shape == (
        2,
        2,
        0,
        3,
    )
    q = torch.randn(2, 2, 3, 4)
    k = torch.randn(2, 1, 0, 4)
    out = tk.segment_attention_mass(q, k, torch.zeros(2, 0, dtype=torch.long), 3)
    assert out.shape == (2, 2, 3, 3) and torch.all(out == 0)


def test_output_is_detached():
    q = torch.randn(1, 2, 3, 4, requires_grad=True)
    k = torch.randn(1, 2, 3, 4, requires_grad=True)
    out = tk.segment_attention_mass(q, k, torch.zeros(1, 3, dtype=torch.long), 1)
    assert not out.requires_grad


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"num_segments": 2}, "outside"),
        ({"k": torch.randn(2, 3, 5, 4)}, "multiple of kv heads"),
        ({"query_valid": torch.ones(2, 5)}, "bool"),
        ({"key_valid": torch.ones(2, 4, dtype=torch.bool)}, "shape"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"key_positions": torch.zeros(2, 5)}, "integer"),
    ],
)
def test_bad_inputs_raise_naming_the_value(kwargs, match):
    args = {
        "q": torch.randn(2, 4, 5, 4),
        "k": torch.randn(2, 2, 5, 4),
        "key_segments": torch.tensor([[0, 1, 2, 0, 1]] * 2),
        "num_segments": 3,
    }
    args.update(kwargs)
    with pytest.raises(tk.KernelError, match=match):
        tk.segment_attention_mass(**args)


@pytest.mark.parametrize("with_valid", [True, False])
def test_by_query_segment_matches_loop(with_valid):
    g = torch.Generator().manual_seed(0)
    mass = torch.rand(2, 3, 9, 4, generator=g)
    qseg = torch.randint(0, 5, (2, 9), generator=g)
    qvalid = torch.rand(2, 9, generator=g) < 0.6 if with_valid else None
    got = tk.segment_mass_by_query_segment(mass, qseg, qvalid, 5)
    want = torch.zeros(2, 3, 5, 4, dtype=torch.float64)
    for b in range(2):
        for i in range(9):
            if qvalid is None or qvalid[b, i]:
                want[b, :, qseg[b, i]] += mass[b, :, i].double()
    assert got.shape == (2, 3, 5, 4)
    torch.testing.assert_close(got.double(), want, atol=1e-6, rtol=1e-6)


def test_by_query_segment_composes_with_mass_to_paper_alpha(attn_case):
    """Summing everything gives the paper's per-segment allocation (times H * #queries)."""
    case = attn_case(1, 1, 2, 2, 8, 8, 4, "none")
    kseg = torch.tensor([[0, 0, 1, 1, 1, 2, 2, 2]])
    mass = ref.segment_attention_mass(case.q, case.k, kseg, 3)
    table = tk.segment_mass_by_query_segment(mass, kseg, None, 3)
    torch.testing.assert_close(table.sum(dim=(1, 2, 3)), torch.tensor([2.0 * 8]))
    # Causal: segment 0 queries (tokens 0, 1) only see segment 0 keys.
    assert torch.all(table[0, :, 0, 1:] == 0)
