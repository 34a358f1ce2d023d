"""Allocation figures: PNGs from an allocation dict, an AllocationResult, or a JSON path."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from tokred.figures import as_allocation, plot_allocation, plot_image_share, plot_pies
from tokred_core import Task, TokredError
from tokred_train.eval.allocation import PAPER_PIES

SEGMENTS = ["system", "image", "instruction", "output"]


def fake_allocation(layers: int = 5, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    und = torch.rand(layers, 4, generator=g)
    und = (und / und.sum(-1, keepdim=True)).tolist()
    gen = torch.rand(layers, 4, generator=g)
    gen[:, 1] = 0  # generation has no input image
    gen = (gen / gen.sum(-1, keepdim=True)).tolist()
    return {
        "understanding": {"segments": SEGMENTS, "num_samples": 8, "shares": und},
        "generation": {"segments": SEGMENTS, "num_samples": 8, "shares": gen},
        "paper": PAPER_PIES,
    }


def assert_png(path, min_w=300, min_h=200):
    with Image.open(path) as im:
        im.load()
        assert im.format == "PNG"
        assert im.width >= min_w and im.height >= min_h


def test_bars_and_pies_from_a_dict(tmp_path):
    alloc = fake_allocation()
    bars = plot_allocation(alloc, tmp_path / "a" / "bars.png", title="t")
    pies = plot_pies(alloc, tmp_path / "pies.png")
    assert_png(bars)
    assert_png(pies)
    # Without the paper row the figure is one row of pies.
    one_row = plot_pies(alloc, tmp_path / "pies1.png", paper=False)
    with Image.open(pies) as a, Image.open(one_row) as b:
        assert b.height < a.height


def test_from_json_path_and_one_task(tmp_path):
    alloc = fake_allocation()
    del alloc["generation"]
    path = tmp_path / "allocation.json"
    path.write_text(json.dumps(alloc))
    assert as_allocation(path) == alloc
    assert_png(plot_allocation(path, tmp_path / "bars.png"), min_w=200)
    assert_png(plot_pies(path, tmp_path / "pies.png"), min_w=200)


def test_from_an_allocation_result(tmp_path):
    from tokred_models.probe import AllocationResult

    mass = {Task.UNDERSTANDING: torch.rand(3, 2, 4, 4, dtype=torch.float64)}
    result = AllocationResult(mass, {Task.UNDERSTANDING: 4})
    alloc = as_allocation(result)
    assert len(alloc["understanding"]["shares"]) == 3
    assert_png(plot_allocation(result, tmp_path / "bars.png"), min_w=200)


def test_image_share_lines(tmp_path):
    out = plot_image_share(
        {"baseline": fake_allocation(seed=1), "reduced": fake_allocation(seed=2)},
        tmp_path / "share.png",
    )
    assert_png(out)


def test_errors(tmp_path):
    with pytest.raises(TokredError, match="not found"):
        as_allocation(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(TokredError, match="not valid JSON"):
        as_allocation(bad)
    with pytest.raises(TokredError, match="neither"):
        plot_allocation({"paper": {}}, tmp_path / "x.png")
    with pytest.raises(TokredError):
        plot_image_share({}, tmp_path / "y.png")
