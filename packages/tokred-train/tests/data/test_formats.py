"""Real-format loaders: LLaVA conversations, prompt-image JSONL, captioned folders."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image
from tokred_core import TokredError
from tokred_train.data import (
    load_captioned_folder,
    load_llava_conversations,
    load_prompt_image_jsonl,
)


def _png(path: Path, value: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)
    return path


def _corrupt(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 200, dtype=np.uint8).tobytes())
    return path


def _conv(question: str, answer: str) -> list[dict[str, str]]:
    return [{"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": answer}]


@pytest.fixture
def llava(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "images"
    _png(root / "coco" / "a.png", 10)
    _png(root / "b.png", 20)
    _corrupt(root / "bad.png")
    records = [
        {"id": "ok-1", "image": "coco/a.png", "conversations": _conv("What is this?", "A cat.")},
        {"id": "missing", "image": "nowhere.png", "conversations": _conv("Q", "A")},
        {"id": "corrupt", "image": "bad.png", "conversations": _conv("Q", "A")},
        {
            "id": 7,
            "image": "b.png",
            "conversations": [
                {"from": "human", "value": "Describe it.\n<image>"},
                {"from": "gpt", "value": "Grey."},
                {"from": "human", "value": "Sure?"},
                {"from": "gpt", "value": "Yes."},
            ],
        },
    ]
    path = tmp_path / "data.json"
    path.write_text(json.dumps(records))
    return path, root


def test_llava_fail_names_record_and_path(llava):
    path, root = llava
    with pytest.raises(TokredError) as err:
        load_llava_conversations(path, root)
    msg = str(err.value)
    assert "'missing'" in msg and "nowhere.png" in msg and "not found" in msg


def test_llava_corrupt_image_names_record(llava, tmp_path):
    path, root = llava
    data = json.loads(path.read_text())
    path.write_text(json.dumps([data[0], data[2]]))
    with pytest.raises(TokredError, match=r"'corrupt'.*unreadable image.*bad\.png"):
        load_llava_conversations(path, root)


def test_llava_skip_counts_and_loads_the_rest(llava, caplog):
    path, root = llava
    with caplog.at_level(logging.WARNING):
        loaded = load_llava_conversations(path, root, on_bad_image="skip")
    assert loaded.num_skipped == 2
    assert "'missing'" in loaded.skipped[0].record and "'corrupt'" in loaded.skipped[1].record
    assert loaded.skipped[0].reason == "image file not found"
    assert "skipped 2" in caplog.text
    ds = loaded.dataset
    assert isinstance(ds, datasets.Dataset) and ds.num_rows == 2
    assert ds["id"] == ["ok-1", "7"]
    assert ds["task"] == ["understanding", "understanding"]
    assert ds["question"] == ["What is this?", "Describe it."]
    assert ds["answer"] == ["A cat.", "Grey."]
    assert len(ds[1]["conversations"]) == 4
    img = ds[0]["image"]
    assert img.size == (8, 8) and np.asarray(img.convert("RGB"))[0, 0, 0] == 10


@pytest.mark.parametrize(
    "conversations, reason",
    [
        ([], "empty conversation"),
        (None, "empty conversation"),
        ([{"from": "gpt", "value": "x"}], "no human turn"),
    ],
)
def test_llava_bad_conversation(llava, conversations, reason):
    path, root = llava
    path.write_text(json.dumps([{"id": "c1", "image": "b.png", "conversations": conversations}]))
    with pytest.raises(TokredError, match=rf"'c1'.*{reason}.*b\.png"):
        load_llava_conversations(path, root)
    loaded = load_llava_conversations(path, root, on_bad_record="skip")
    assert loaded.dataset.num_rows == 0 and loaded.num_skipped == 1


def test_llava_text_only_record_is_a_bad_image(llava):
    path, root = llava
    path.write_text(json.dumps([{"id": "t", "conversations": _conv("hi", "hello")}]))
    with pytest.raises(TokredError, match="names no image"):
        load_llava_conversations(path, root)
    assert load_llava_conversations(path, root, on_bad_image="skip").num_skipped == 1


def test_llava_file_level_errors(tmp_path):
    with pytest.raises(TokredError, match="not found"):
        load_llava_conversations(tmp_path / "none.json", tmp_path)
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(TokredError, match="not valid JSON"):
        load_llava_conversations(tmp_path / "x.json", tmp_path)
    (tmp_path / "x.json").write_text("[]")
    with pytest.raises(TokredError, match="on_bad_image"):
        load_llava_conversations(tmp_path / "x.json", tmp_path, on_bad_image="ignore")


def test_jsonl_prompts(tmp_path):
    _png(tmp_path / "img" / "1.png")
    _corrupt(tmp_path / "img" / "2.png")
    lines = [
        {"prompt": "a red circle", "image": "img/1.png"},
        {"prompt": "broken", "image": "img/2.png"},
        {"prompt": "gone", "image": "img/3.png"},
    ]
    path = tmp_path / "gen.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    with pytest.raises(TokredError, match=r"line 2 of .*unreadable.*2\.png"):
        load_prompt_image_jsonl(path)
    loaded = load_prompt_image_jsonl(path, on_bad_image="skip")
    assert loaded.num_skipped == 2
    assert loaded.skipped[1].record.startswith("line 3") and loaded.skipped[1].path.endswith(
        "3.png"
    )
    ds = loaded.dataset
    assert ds["prompt"] == ["a red circle"] and ds["task"] == ["generation"] and ds["id"] == ["1"]
    assert ds[0]["image"].size == (8, 8)


def test_jsonl_bad_lines(tmp_path):
    _png(tmp_path / "1.png")
    path = tmp_path / "gen.jsonl"
    path.write_text('{"prompt": "ok", "image": "1.png"}\n{oops\n{"image": "1.png"}\n')
    with pytest.raises(TokredError, match="line 2 .*invalid JSON"):
        load_prompt_image_jsonl(path)
    loaded = load_prompt_image_jsonl(path, on_bad_record="skip")
    assert loaded.dataset.num_rows == 1 and loaded.num_skipped == 2
    assert "prompt" in loaded.skipped[1].reason


def test_jsonl_line_that_is_not_utf8_is_a_bad_record(tmp_path):
    _png(tmp_path / "1.png")
    path = tmp_path / "gen.jsonl"
    path.write_bytes(
        b'{"prompt": "ok", "image": "1.png"}\n{"prompt": "caf\xe9", "image": "1.png"}\n'
    )
    with pytest.raises(TokredError, match=r"^line 2 of .*gen.jsonl: not UTF-8 text"):
        load_prompt_image_jsonl(path)
    loaded = load_prompt_image_jsonl(path, on_bad_record="skip")
    assert loaded.dataset.num_rows == 1 and loaded.labels == [f"line 1 of {path}"]


def test_jsonl_image_root(tmp_path):
    _png(tmp_path / "elsewhere" / "1.png")
    path = tmp_path / "gen.jsonl"
    path.write_text('{"prompt": "p", "image": "1.png"}\n')
    assert load_prompt_image_jsonl(path, image_root=tmp_path / "elsewhere").dataset.num_rows == 1


def test_captioned_folder(tmp_path):
    folder = tmp_path / "jdb"
    _png(folder / "x" / "001.png")
    (folder / "x" / "001.txt").write_text("a blue square\n")
    _png(folder / "002.jpg.png")
    (folder / "002.jpg.txt").write_text("two")
    _corrupt(folder / "003.png")
    (folder / "003.txt").write_text("corrupt")
    _png(folder / "004.png")  # no caption
    (folder / "notes.md").write_text("ignored")
    with pytest.raises(TokredError, match=r"003\.png.*unreadable"):
        load_captioned_folder(folder, on_bad_record="skip")
    with pytest.raises(TokredError, match=r"004\.png.*caption file 004\.txt not found"):
        load_captioned_folder(folder, on_bad_image="skip")
    loaded = load_captioned_folder(folder, on_bad_image="skip", on_bad_record="skip")
    assert loaded.num_skipped == 2
    ds = loaded.dataset
    assert sorted(ds["id"]) == ["002.jpg", "x/001"]
    assert dict(zip(ds["id"], ds["prompt"], strict=True))["x/001"] == "a blue square"
    assert all(os.path.isabs(p["path"]) for p in ds.data.column("image").to_pylist())


def test_captioned_folder_missing(tmp_path):
    with pytest.raises(TokredError, match="not found"):
        load_captioned_folder(tmp_path / "nope")
