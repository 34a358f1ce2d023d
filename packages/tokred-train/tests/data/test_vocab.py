"""The unified vocabulary: text tokenizer, image-token ids, persistence."""

from __future__ import annotations

import pytest
import torch
from tokred_core import TokredError
from tokred_train.data import (
    DEFAULT_SYSTEM_PROMPT,
    SPECIAL_TOKENS,
    UnifiedVocab,
    build_shapes_dataset,
    collect_texts,
)


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    dd = build_shapes_dataset(num_train=30, num_val=0, seed=2)
    return collect_texts(dd["train"], extra=[DEFAULT_SYSTEM_PROMPT])


@pytest.fixture(scope="module")
def vocab(corpus) -> UnifiedVocab:
    return UnifiedVocab.build(corpus, codebook_size=64)


def test_layout_of_ids(vocab):
    assert tuple(vocab.tokens[:6]) == SPECIAL_TOKENS
    assert (vocab.pad_id, vocab.bos_id, vocab.eos_id, vocab.unk_id, vocab.boi_id, vocab.eoi_id) == (
        0, 1, 2, 3, 4, 5,
    )  # fmt: skip
    assert vocab.image_offset == vocab.text_vocab_size
    assert vocab.vocab_size == vocab.text_vocab_size + 64 == len(vocab)


@pytest.mark.parametrize("level", ["word", "char"])
def test_text_round_trip(corpus, level):
    vocab = UnifiedVocab.build(corpus, codebook_size=8, level=level)
    for text in corpus[:50]:
        ids = vocab.encode_text(text)
        assert vocab.unk_id not in ids
        assert vocab.decode_text(ids) == text
    if level == "word":  # known words are single tokens
        assert len(vocab.encode_text("a red circle at the top left")) == 7
    # Text made of seen characters but unseen words is spelled out, still exact.
    assert vocab.decode_text(vocab.encode_text("  letter   soup-dear?")) == "  letter   soup-dear?"


def test_unknown_chars_map_to_unk(vocab):
    ids = vocab.encode_text("red Ω circle", add_bos=True, add_eos=True)
    assert ids[0] == vocab.bos_id and ids[-1] == vocab.eos_id
    assert ids.count(vocab.unk_id) == 1
    assert vocab.decode_text(ids) == "red  circle"
    assert vocab.decode_text(ids, skip_special=False) == "<bos>red <unk> circle<eos>"


def test_image_ids(vocab):
    codes = torch.tensor([0, 5, 63])
    ids = vocab.image_ids(codes)
    assert ids.tolist() == [vocab.text_vocab_size + c for c in (0, 5, 63)]
    assert bool(vocab.is_image_id(ids).all())
    assert not bool(vocab.is_image_id(torch.tensor([vocab.boi_id, vocab.eoi_id])).any())
    assert torch.equal(vocab.codes_from_ids(ids), codes)
    assert vocab.decode_text(ids, skip_special=False) == "<img_0><img_5><img_63>"
    with pytest.raises(TokredError, match="codebook of 64"):
        vocab.image_ids([64])
    with pytest.raises(TokredError, match="not image tokens"):
        vocab.codes_from_ids([vocab.boi_id])
    with pytest.raises(TokredError, match="outside the vocabulary"):
        vocab.decode_text([vocab.vocab_size])


def test_deterministic_and_save_load(corpus, vocab, tmp_path):
    assert UnifiedVocab.build(list(reversed(corpus)), codebook_size=64) == vocab
    path = vocab.save(tmp_path / "sub" / "vocab.json")
    assert not list(path.parent.glob("*.tmp"))
    loaded = UnifiedVocab.load(path)
    assert loaded == vocab
    assert loaded.encode_text(corpus[3]) == vocab.encode_text(corpus[3])


def test_collect_texts_reads_records_and_datasets():
    recs = [
        {"prompt": "p"},
        {"question": "q", "answer": "a"},
        {"questions": [{"question": "x", "answer": "y"}]},
    ]
    assert collect_texts(recs, extra=["s"]) == ["s", "p", "q", "a", "x", "y"]


def test_errors(tmp_path):
    with pytest.raises(TokredError, match="level"):
        UnifiedVocab.build(["x"], codebook_size=4, level="bpe")
    with pytest.raises(TokredError, match="codebook_size"):
        UnifiedVocab.build(["x"], codebook_size=0)
    with pytest.raises(TokredError, match="special tokens"):
        UnifiedVocab(["a", "b"], codebook_size=4)
    with pytest.raises(TokredError, match="not found"):
        UnifiedVocab.load(tmp_path / "missing.json")
    (tmp_path / "v.json").write_text('{"format": "other"}')
    with pytest.raises(TokredError, match="format"):
        UnifiedVocab.load(tmp_path / "v.json")
