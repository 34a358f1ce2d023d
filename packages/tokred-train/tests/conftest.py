"""Shared fixtures of the tokred-train tests."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image


@pytest.fixture
def real_data(tmp_path):
    """tmp_path with llava.json (6 good records and a 'bad' one whose image is missing),
    gen.jsonl (6 prompts) and their images under img/ (odd sizes, two colours)."""
    root = tmp_path
    rng = np.random.default_rng(0)
    (root / "img").mkdir()
    colours = {"red": (220, 30, 30), "blue": (30, 60, 220)}
    llava, lines = [], []
    for i in range(6):
        name = list(colours)[i % 2]
        pixels = np.full((20 + i, 24, 3), colours[name], dtype=np.uint8)
        pixels[: 4 + i] = rng.integers(0, 255, (4 + i, 24, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "img" / f"{i}.png")
        llava.append(
            {
                "id": f"u{i}",
                "image": f"{i}.png",
                "conversations": [
                    {"from": "human", "value": "<image>\nwhat colour is it?"},
                    {"from": "gpt", "value": name},
                ],
            }
        )
        lines.append(json.dumps({"prompt": f"a {name} picture", "image": f"{i}.png"}))
    llava.append({"id": "bad", "image": "missing.png", "conversations": llava[0]["conversations"]})
    (root / "llava.json").write_text(json.dumps(llava))
    (root / "gen.jsonl").write_text("\n".join(lines) + "\n")
    return root
