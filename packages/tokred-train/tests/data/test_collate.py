"""Collation: sequences, layouts and labels of both tasks, in mixed padded batches."""

from __future__ import annotations

import pytest
import torch
from tokred_core import Segment, Task, TokenLayout, TokredError
from tokred_train.data import (
    DEFAULT_SYSTEM_PROMPT,
    IGNORE_INDEX,
    PatchVQTokenizer,
    UnifiedVocab,
    as_uint8_batch,
    build_shapes_dataset,
    collate,
    collect_texts,
    encode_sample,
    shapes_samples,
)

T = 16  # tokens per image: 16x16 images, 4x4 patches


@pytest.fixture(scope="module")
def setup():
    dd = build_shapes_dataset(num_train=12, num_val=0, seed=0, image_size=16)
    train = dd["train"]
    vq = PatchVQTokenizer.fit(train["image"], codebook_size=32, patch_size=4, iters=5)
    codes = vq.encode(train["image"])
    vocab = UnifiedVocab.build(collect_texts(train, [DEFAULT_SYSTEM_PROMPT]), vq.codebook_size)
    return train, vq, codes, vocab


def _mixed(setup):
    train, _, codes, _ = setup
    und = {
        "task": "understanding",
        "question": "what shape is at the top left?",
        "answer": "circle",
    }
    gen = {"task": "generation", "prompt": train[1]["caption"]}
    und2 = {
        "task": "understanding",
        "question": "how many shapes are there?",
        "answer": "top-right",
    }
    return [und, gen, und2], codes[[0, 1, 2]]


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_layout_matches_token_counts(setup, padding_side):
    _, _, _, vocab = setup
    records, codes = _mixed(setup)
    batch = collate(records, vocab, codes, padding_side=padding_side)
    layout: TokenLayout = batch["layout"]
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    assert ids.shape == labels.shape == mask.shape == layout.segments.shape
    assert ids.dtype == labels.dtype == mask.dtype == torch.long
    assert layout.tasks.tolist() == [Task.UNDERSTANDING, Task.GENERATION, Task.UNDERSTANDING]
    n_sys = 1 + len(vocab.encode_text(DEFAULT_SYSTEM_PROMPT))
    for b, rec in enumerate(records):
        seg = layout.segments[b]
        count = {s: int((seg == s).sum()) for s in Segment}
        assert count[Segment.SYSTEM] == n_sys
        if rec["task"] == "understanding":
            assert count[Segment.IMAGE] == T + 2  # boi, codes, eoi
            assert count[Segment.INSTRUCTION] == len(vocab.encode_text(rec["question"]))
            assert count[Segment.OUTPUT] == len(vocab.encode_text(rec["answer"])) + 1  # + eos
        else:
            assert count[Segment.IMAGE] == 0  # the generated image is the OUTPUT
            assert count[Segment.INSTRUCTION] == len(vocab.encode_text(rec["prompt"])) + 1  # + boi
            assert count[Segment.OUTPUT] == T + 1  # codes, eoi
        real = sum(v for s, v in count.items() if s != Segment.PAD)
        assert int(mask[b].sum()) == real
        assert bool((ids[b][seg == Segment.PAD] == vocab.pad_id).all())
    # The longest sample is unpadded; padding sits on the requested side.
    assert int(mask.sum(1).max()) == ids.shape[1]
    edge = 0 if padding_side == "left" else -1
    short = int(mask.sum(1).argmin())
    assert layout.segments[short, edge] == Segment.PAD


def test_labels_align_with_output_segment(setup):
    _, _, _, vocab = setup
    records, codes = _mixed(setup)
    batch = collate(records, vocab, codes)
    target = batch["layout"].target_mask()
    labels, ids = batch["labels"], batch["input_ids"]
    assert torch.equal(labels != IGNORE_INDEX, target)
    assert torch.equal(labels[target], ids[target])
    # Understanding targets: the answer then eos. Generation targets: the codes then eoi.
    u = labels[0][labels[0] != IGNORE_INDEX].tolist()
    assert u == vocab.encode_text("circle") + [vocab.eos_id]
    g = labels[1][labels[1] != IGNORE_INDEX]
    assert torch.equal(g[:-1], vocab.image_ids(codes[1])) and int(g[-1]) == vocab.eoi_id


def test_delimiters_sit_in_their_segments(setup):
    _, _, _, vocab = setup
    records, codes = _mixed(setup)
    batch = collate(records, vocab, codes)
    ids, seg = batch["input_ids"], batch["layout"].segments
    assert int(ids[0, 0]) == vocab.bos_id and seg[0, 0] == Segment.SYSTEM
    # understanding: boi/eoi bracket the IMAGE segment
    img = ids[0][seg[0] == Segment.IMAGE]
    assert int(img[0]) == vocab.boi_id and int(img[-1]) == vocab.eoi_id
    assert bool(vocab.is_image_id(img[1:-1]).all())
    # generation: boi ends the INSTRUCTION (given); eoi ends the OUTPUT (predicted)
    instr = ids[1][seg[1] == Segment.INSTRUCTION]
    assert int(instr[-1]) == vocab.boi_id
    out = ids[1][seg[1] == Segment.OUTPUT]
    assert int(out[-1]) == vocab.eoi_id
    # image_mask of the layout covers exactly the image tokens (and eoi) of the output
    assert int(batch["layout"].image_mask()[1].sum()) == T + 1


def test_mixed_batch_round_trips(setup):
    _, _, _, vocab = setup
    records, codes = _mixed(setup)
    for side in ("right", "left"):
        batch = collate(records, vocab, codes, padding_side=side)
        ids, seg = batch["input_ids"], batch["layout"].segments
        for b, rec in enumerate(records):
            row, s = ids[b], seg[b]
            assert vocab.decode_text(row[s == Segment.SYSTEM]) == DEFAULT_SYSTEM_PROMPT
            img = row[vocab.is_image_id(row)]
            assert torch.equal(vocab.codes_from_ids(img), codes[b])
            if rec["task"] == "understanding":
                assert vocab.decode_text(row[s == Segment.INSTRUCTION]) == rec["question"]
                assert vocab.decode_text(row[s == Segment.OUTPUT]) == rec["answer"]
            else:
                assert vocab.decode_text(row[s == Segment.INSTRUCTION]) == rec["prompt"]


def test_collates_a_datasets_batch_of_samples(setup):
    train, vq, codes, vocab = setup
    samples = shapes_samples(train)
    batch_rows = samples.shuffle(seed=0)[:8]  # a dict of columns
    batch = collate(batch_rows, vocab, codes[batch_rows["image_index"]])
    assert batch["input_ids"].shape[0] == 8
    tasks = batch["layout"].tasks.tolist()
    assert tasks == [int(Task[t.upper()]) for t in batch_rows["task"]]
    # Generation targets decode back to the training image.
    gen = [i for i, t in enumerate(batch_rows["task"]) if t == "generation"]
    for i in gen:
        out = batch["input_ids"][i][batch["layout"].segments[i] == Segment.OUTPUT][:-1]
        img = vq.decode(vocab.codes_from_ids(out))
        assert torch.equal(img, vq.decode(codes[batch_rows["image_index"][i]]))
        assert as_uint8_batch(img).shape == (1, 16, 16, 3)


def test_inference_prompts(setup):
    _, _, codes, vocab = setup
    gen = encode_sample(
        {"task": "generation", "prompt": "a red circle"}, [], vocab, with_output=False
    )
    assert gen.ids[-1] == vocab.boi_id and [s for s, _ in gen.spans] == [
        Segment.SYSTEM,
        Segment.INSTRUCTION,
    ]
    und = encode_sample(
        {"task": "understanding", "question": "where?"}, codes[0], vocab, with_output=False
    )
    assert [s for s, _ in und.spans] == [Segment.SYSTEM, Segment.IMAGE, Segment.INSTRUCTION]
    assert sum(n for _, n in und.spans) == len(und.ids)


def test_errors(setup):
    _, _, codes, vocab = setup
    records, c = _mixed(setup)
    with pytest.raises(TokredError, match="3 records but 2"):
        collate(records, vocab, c[:2])
    with pytest.raises(TokredError, match="max_length"):
        collate(records, vocab, c, max_length=20)
    with pytest.raises(TokredError, match="padding_side"):
        collate(records, vocab, c, padding_side="middle")
    with pytest.raises(TokredError, match="unknown task"):
        collate([{"task": "captioning"}], vocab, c[:1])
    with pytest.raises(TokredError, match="'answer'"):
        collate([{"task": "understanding", "question": "q"}], vocab, c[:1])
    with pytest.raises(TokredError, match="no records"):
        collate([], vocab, [])
    with pytest.raises(TokredError, match="codebook"):
        collate([{"task": "generation", "prompt": "p"}], vocab, [[999] * T])
