"""Projection sharing groups, and the paper's Eq. 2 aggregation against hand sums."""

import pytest
import torch
from tokred_core import (
    Sharing,
    TokenLayout,
    TokredError,
    image_sets,
    key_segment_shares,
    key_segment_shares_by_query,
    parse_sharing,
    projection_groups,
)


@pytest.fixture
def layout():
    return TokenLayout.from_spans(
        [[("system", 1), ("image", 2), ("output", 1)], [("instruction", 1), ("output", 2)]],
        ["understanding", "generation"],
    )


def test_groups_per_mode(layout):
    assert projection_groups(layout, "shared").tolist() == [[0, 0, 0, 0], [0, 0, 0, 0]]
    assert projection_groups(layout, "modality").tolist() == [[0, 1, 1, 0], [0, 1, 1, 0]]
    assert projection_groups(layout, Sharing.TASK).tolist() == [[0, 1, 1, 0], [0, 2, 2, 0]]
    assert image_sets("shared") == ()
    assert image_sets("modality") == ("image",)
    assert image_sets("task") == ("understanding", "generation")


def test_group_k_names_image_set_k_minus_1(layout):
    for mode in Sharing:
        groups = projection_groups(layout, mode)
        assert int(groups.max()) == len(image_sets(mode))


def test_unknown_sharing():
    with pytest.raises(TokredError, match="unknown projection sharing 'partial'"):
        parse_sharing("partial")


def test_key_segment_shares_hand_computed():
    # 1 layer, 2 heads, 2 query segments, 3 key segments.
    mass = torch.tensor([[[[1.0, 2.0, 1.0], [0.0, 4.0, 0.0]], [[3.0, 0.0, 1.0], [2.0, 2.0, 0.0]]]])
    # Mean over heads: [[2, 1, 1], [1, 3, 0]]; sum over queries: [3, 4, 1] / 8.
    shares = key_segment_shares(mass)
    assert shares.shape == (1, 3)
    assert torch.allclose(shares, torch.tensor([[3 / 8, 4 / 8, 1 / 8]], dtype=torch.float64))
    by_query = key_segment_shares_by_query(mass)
    expected = torch.tensor([[[0.5, 0.25, 0.25], [0.25, 0.75, 0.0]]], dtype=torch.float64)
    assert torch.allclose(by_query, expected)


def test_empty_query_segment_rows_are_zero_and_shape_is_checked():
    mass = torch.zeros(2, 1, 2, 3)
    mass[:, :, 0, 1] = 5.0
    by_query = key_segment_shares_by_query(mass)
    assert torch.equal(by_query[:, 1], torch.zeros(2, 3, dtype=torch.float64))
    assert torch.allclose(key_segment_shares(mass).sum(-1), torch.ones(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="mass must be"):
        key_segment_shares(torch.zeros(2, 3))
