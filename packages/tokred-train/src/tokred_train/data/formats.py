"""Real-format loaders, returning `datasets.Dataset`s the collator can use directly.

Why: the embedded shapes set is the default, but the same training loop must take the
formats real unified models are trained on:
- understanding: LLaVA / ShareGPT4V conversation JSON, a list of
  {"id", "image": path relative to an image root, "conversations": [{"from": "human",
  "value": "<image>\\n..."}, {"from": "gpt", "value": "..."}, ...]};
- generation: a prompt-image JSONL ({"prompt": ..., "image": path} per line), or an image
  folder with same-stem .txt captions (JourneyDB-like).

Every output row carries `task` plus the text fields `collate` reads (`question` and
`answer`, or `prompt`), an `id`, and an `image` column (a `datasets.Image` feature that
holds the resolved path and decodes lazily). Only the first human/gpt exchange of a
conversation becomes question/answer; the full conversation is kept in `conversations`.

Bad data is found at load time, not midway through training: a missing or unreadable
image, or a malformed record, raises `TokredError` naming the record (id or line) and
the path. With on_bad_image="skip" (or on_bad_record="skip") such records are left out
and listed in `LoadedDataset.skipped`, and a warning gives their count.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import datasets
from PIL import Image, UnidentifiedImageError
from tokred_core import TokredError

__all__ = [
    "IMAGE_TOKEN",
    "IMAGE_EXTENSIONS",
    "OnBad",
    "SkippedRecord",
    "LoadedDataset",
    "understanding_features",
    "generation_features",
    "load_llava_conversations",
    "load_prompt_image_jsonl",
    "load_captioned_folder",
]

log = logging.getLogger(__name__)

OnBad = Literal["fail", "skip"]
IMAGE_TOKEN = "<image>"
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")


@dataclass(frozen=True)
class SkippedRecord:
    """A record left out under a "skip" policy, and why."""

    record: str  # e.g. "id 'abc' in data.json" or "line 3 of data.jsonl"
    path: str
    reason: str


@dataclass
class LoadedDataset:
    """The loaded rows and the records that were skipped."""

    dataset: datasets.Dataset
    skipped: list[SkippedRecord] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    """Where each row of `dataset` came from, as errors name it (e.g. "line 3 of
    data.jsonl"), in row order."""

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)


class _Bad(Exception):
    """A bad record found while parsing: kind "image" or "record", with the image path."""

    def __init__(self, kind: str, reason: str, path: Path | None = None):
        super().__init__(reason)
        self.kind, self.reason, self.path = kind, reason, path


_Parse = Callable[[], tuple[Path, dict[str, Any]]]


def _check_policy(name: str, value: str) -> None:
    if value not in ("fail", "skip"):
        raise TokredError(f"{name}={value!r}: expected 'fail' or 'skip'")


def _verify_image(path: Path, decode: bool) -> None:
    """Raise _Bad unless `path` is a readable image (fully decoded when `decode`)."""
    if not path.is_file():
        raise _Bad("image", "image file not found", path)
    try:
        with Image.open(path) as im:
            if decode:
                im.load()
    except (
        UnidentifiedImageError,
        Image.DecompressionBombError,
        OSError,
        SyntaxError,
        ValueError,
    ) as e:
        raise _Bad("image", f"unreadable image ({type(e).__name__}: {e})", path) from e


def _collect(
    items: Iterator[tuple[str, _Parse]],
    verify: bool,
    on_bad_image: OnBad,
    on_bad_record: OnBad,
) -> tuple[list[dict[str, Any]], list[str], list[SkippedRecord]]:
    """Parse and check records one by one, applying the fail/skip policies uniformly:
    (the rows, the label of each row, the records skipped).

    Everything is checked before a single row is returned, so a "fail" policy raises at
    load time and a "skip" policy never stops midway.
    """
    _check_policy("on_bad_image", on_bad_image)
    _check_policy("on_bad_record", on_bad_record)
    rows: list[dict[str, Any]] = []
    labels: list[str] = []
    skipped: list[SkippedRecord] = []
    for label, parse in items:
        try:
            path, row = parse()
            _verify_image(path, decode=verify)
        except _Bad as e:
            where = str(e.path) if e.path is not None else "-"
            policy, option = (
                (on_bad_image, "on_bad_image")
                if e.kind == "image"
                else (on_bad_record, "on_bad_record")
            )
            if policy == "fail":
                raise TokredError(
                    f"{label}: {e.reason} (image: {where}); fix it, or set data.{option}=skip"
                ) from None
            skipped.append(SkippedRecord(label, where, e.reason))
            continue
        row["image"] = str(path)
        rows.append(row)
        labels.append(label)
    if skipped:
        log.warning(
            "skipped %d bad records (first: %s: %s)",
            len(skipped),
            skipped[0].record,
            skipped[0].reason,
        )
    return rows, labels, skipped


def _to_dataset(rows: list[dict[str, Any]], features: datasets.Features) -> datasets.Dataset:
    cols = {name: [r[name] for r in rows] for name in features}
    return datasets.Dataset.from_dict(cols, features=features)


def understanding_features() -> datasets.Features:
    """Schema of understanding rows (LLaVA-style)."""
    turn = {"from": datasets.Value("string"), "value": datasets.Value("string")}
    return datasets.Features(
        {
            "id": datasets.Value("string"),
            "task": datasets.Value("string"),
            "image": datasets.Image(),
            "question": datasets.Value("string"),
            "answer": datasets.Value("string"),
            "conversations": datasets.List(turn),
        }
    )


def generation_features() -> datasets.Features:
    """Schema of generation rows (prompt + target image)."""
    return datasets.Features(
        {
            "id": datasets.Value("string"),
            "task": datasets.Value("string"),
            "image": datasets.Image(),
            "prompt": datasets.Value("string"),
        }
    )


def _first_exchange(conv: Any, path: Path | None) -> tuple[str, str]:
    """(question, answer) of the first human turn and the gpt turn that answers it."""
    if not isinstance(conv, list) or not conv:
        raise _Bad("record", "empty conversation", path)
    for i, turn in enumerate(conv):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise _Bad("record", f"conversation turn {i} is not a {{'from', 'value'}} object", path)
    for i in range(len(conv) - 1):
        if conv[i]["from"] == "human" and conv[i + 1]["from"] == "gpt":
            question = str(conv[i]["value"]).replace(IMAGE_TOKEN, "").strip()
            answer = str(conv[i + 1]["value"]).strip()
            if not answer:
                raise _Bad("record", f"empty gpt answer in conversation turn {i + 1}", path)
            return question, answer
    raise _Bad("record", "conversation has no human turn followed by a gpt turn", path)


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise TokredError(f"data file not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TokredError(f"{path} is not valid JSON: {e}") from e


def load_llava_conversations(
    json_path: str | os.PathLike[str],
    image_root: str | os.PathLike[str],
    on_bad_image: OnBad = "fail",
    on_bad_record: OnBad = "fail",
    verify_images: bool = True,
) -> LoadedDataset:
    """Load LLaVA / ShareGPT4V conversations as understanding rows.

    Records without an "image" (LLaVA's text-only samples) count as bad images: this
    pipeline trains understanding on image+text only. verify_images=True decodes every
    image once at load time (catches truncated files); False only opens the header.
    """
    json_path, root = Path(json_path), Path(image_root)
    data = _read_json(json_path)
    if not isinstance(data, list):
        raise TokredError(
            f"{json_path}: expected a JSON list of records, got {type(data).__name__}"
        )

    def parse(rec: Any, rid: str) -> tuple[Path, dict[str, Any]]:
        if not isinstance(rec, dict):
            raise _Bad("record", f"not a JSON object but {type(rec).__name__}")
        path = root / str(rec["image"]) if rec.get("image") else None
        question, answer = _first_exchange(rec.get("conversations"), path)
        if path is None:
            raise _Bad("image", "record names no image")
        conv = [{"from": str(t["from"]), "value": str(t["value"])} for t in rec["conversations"]]
        row = {"id": rid, "task": "understanding", "question": question, "answer": answer}
        row["conversations"] = conv
        return path, row

    def items() -> Iterator[tuple[str, _Parse]]:
        for i, rec in enumerate(data):
            rid = str(rec["id"]) if isinstance(rec, dict) and "id" in rec else f"#{i}"
            yield f"record {i} (id {rid!r}) of {json_path}", partial(parse, rec, rid)

    rows, labels, skipped = _collect(items(), verify_images, on_bad_image, on_bad_record)
    return LoadedDataset(_to_dataset(rows, understanding_features()), skipped, labels)


def load_prompt_image_jsonl(
    jsonl_path: str | os.PathLike[str],
    image_root: str | os.PathLike[str] | None = None,
    on_bad_image: OnBad = "fail",
    on_bad_record: OnBad = "fail",
    verify_images: bool = True,
) -> LoadedDataset:
    """Load generation rows from JSONL lines {"prompt": ..., "image": path}.

    Relative image paths resolve against `image_root` (default: the JSONL's folder).
    Blank lines are ignored; ids are the record's "id" or its line number.
    """
    jsonl_path = Path(jsonl_path)
    if not jsonl_path.is_file():
        raise TokredError(f"data file not found: {jsonl_path}")
    root = Path(image_root) if image_root is not None else jsonl_path.parent

    def parse(raw: bytes, lineno: int) -> tuple[Path, dict[str, Any]]:
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise _Bad("record", f"not UTF-8 text ({e.reason} at byte {e.start})") from None
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise _Bad("record", f"invalid JSON ({e})") from None
        if not isinstance(rec, dict):
            raise _Bad("record", f"not a JSON object but {type(rec).__name__}")
        path = root / str(rec["image"]) if rec.get("image") else None
        prompt = rec.get("prompt")
        if prompt is not None and not isinstance(prompt, str):
            raise _Bad("record", f"'prompt' is {prompt!r}, not text", path)
        if not isinstance(prompt, str) or not prompt.strip():
            raise _Bad("record", "missing or empty 'prompt'", path)
        if path is None:
            raise _Bad("image", "record names no image")
        rid = str(rec.get("id", lineno))
        return path, {"id": rid, "task": "generation", "prompt": prompt.strip()}

    def items() -> Iterator[tuple[str, _Parse]]:
        # Bytes, decoded line by line: a line that is not UTF-8 is one bad record, named.
        with open(jsonl_path, "rb") as f:
            for lineno, line in enumerate(f, start=1):
                if line.strip():
                    yield f"line {lineno} of {jsonl_path}", partial(parse, line, lineno)

    rows, labels, skipped = _collect(items(), verify_images, on_bad_image, on_bad_record)
    return LoadedDataset(_to_dataset(rows, generation_features()), skipped, labels)


def load_captioned_folder(
    folder: str | os.PathLike[str],
    on_bad_image: OnBad = "fail",
    on_bad_record: OnBad = "fail",
    verify_images: bool = True,
    extensions: tuple[str, ...] = IMAGE_EXTENSIONS,
) -> LoadedDataset:
    """Load generation rows from image files with same-stem .txt captions (recursive).

    `a/b.png` takes its prompt from `a/b.txt`; ids are the relative paths without suffix.
    A missing or empty caption is a bad record.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise TokredError(f"image folder not found: {folder}")
    exts = {e.lower() for e in extensions}
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in exts)

    def parse(path: Path) -> tuple[Path, dict[str, Any]]:
        cap = path.with_suffix(".txt")
        if not cap.is_file():
            raise _Bad("record", f"caption file {cap.name} not found", path)
        try:
            prompt = cap.read_text(encoding="utf-8").strip()
        except UnicodeDecodeError as e:
            raise _Bad("record", f"caption {cap.name} is not UTF-8 ({e})", path) from None
        if not prompt:
            raise _Bad("record", f"caption {cap.name} is empty", path)
        rid = path.relative_to(folder).with_suffix("").as_posix()
        return path, {"id": rid, "task": "generation", "prompt": prompt}

    items = (
        (f"image {p.relative_to(folder).as_posix()!r} in {folder}", partial(parse, p))
        for p in files
    )
    rows, labels, skipped = _collect(items, verify_images, on_bad_image, on_bad_record)
    return LoadedDataset(_to_dataset(rows, generation_features()), skipped, labels)
