"""Evaluation: exact-match scoring, greedy/constrained decoding in both modes, the
detector-based generation check (teacher-forcing oracle), and the sample grid."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from tokred_core import Task, TokredError, build_policy
from tokred_models import apply_reduction
from tokred_models.tiny import TinyUnifiedConfig, build_tiny_unified_model
from tokred_train.data import (
    DEFAULT_SYSTEM_PROMPT,
    PatchVQTokenizer,
    UnifiedVocab,
    as_uint8_batch,
    build_shapes_dataset,
    collect_texts,
    encode_sample,
    score,
)
from tokred_train.eval import (
    evaluate_generation,
    evaluate_understanding,
    exact_match,
    generate_image_codes,
    generation_chance,
    normalize_answer,
    question_type,
    save_sample_grid,
    score_answers,
    score_generated_codes,
    shapes_eval_records,
)
from tokred_train.eval.decode import Prompt, decode_batch, reduction_context
from torch import nn


@pytest.fixture(scope="module")
def setup():
    # 32x32 images in 8x8 patches: 16 tokens per image, and the codebook holds every
    # distinct training patch, so VQ is lossless on the training split.
    ds = build_shapes_dataset(num_train=48, num_val=0, seed=3, image_size=32)
    train = ds["train"]
    vq = PatchVQTokenizer.fit(train["image"], codebook_size=128, patch_size=8)
    vocab = UnifiedVocab.build(collect_texts(train, [DEFAULT_SYSTEM_PROMPT]), vq.codebook_size)
    und, und_codes, gen = shapes_eval_records(train, vq)
    return SimpleNamespace(train=train, vq=vq, vocab=vocab, und=und, und_codes=und_codes, gen=gen)


def tiny_model(vocab: UnifiedVocab, seed: int = 0) -> nn.Module:
    model = build_tiny_unified_model(
        TinyUnifiedConfig(
            vocab_size=vocab.vocab_size,
            hidden_size=32,
            intermediate_size=64,
            num_layers=4,
            num_heads=4,
            num_kv_heads=2,
            seed=seed,
        )
    )
    # A larger init spreads the logits so greedy ties (and fp noise) do not decide tokens.
    with torch.no_grad():
        model.lm_head.weight.normal_(0, 1.0, generator=torch.Generator().manual_seed(seed))
    return model.eval()


class Oracle(nn.Module):
    """Teacher forcing: knows each full sequence and predicts its next token exactly.

    Works only through the no-cache path (mode "reduced" on an unpatched model), which
    calls it with the whole (left-padded) sequence at every step.
    """

    def __init__(self, sequences, vocab_size: int, fallback: int) -> None:
        super().__init__()
        self.next = {}
        for seq in sequences:
            for k in range(1, len(seq)):
                self.next[tuple(seq[:k])] = seq[k]
        self.vocab_size = vocab_size
        self.fallback = fallback
        self.weight = nn.Parameter(torch.zeros(1))
        self.calls = 0

    def forward(self, input_ids, attention_mask, position_ids=None, logits_to_keep=0, **kwargs):
        assert "past_key_values" not in kwargs
        self.calls += 1
        logits = torch.zeros(input_ids.shape[0], 1, self.vocab_size)
        for b in range(input_ids.shape[0]):
            seq = tuple(input_ids[b][attention_mask[b].bool()].tolist())
            # Positions must count real tokens only, whatever the left padding.
            assert position_ids[b, -1].item() == len(seq) - 1
            logits[b, 0, self.next.get(seq, self.fallback)] = 10.0
        return SimpleNamespace(logits=logits)


# ---- scoring on strings -------------------------------------------------------------------
def test_exact_match_and_question_types():
    assert exact_match(" Circle.", "circle")
    assert not exact_match("circles", "circle")
    assert normalize_answer("  Top-Left  ") == "top-left"
    assert question_type("what shape is at the top left?") == "kind"
    assert question_type("what colour is the shape at the top left?") == "colour"
    assert question_type("where is the red circle?") == "position"
    assert question_type("how many shapes are there?") == "count"
    assert question_type("why?") == "other"


def test_score_answers_by_hand():
    questions = [
        "what shape is at the top left?",
        "what shape is at the top right?",
        "what shape is at the bottom left?",
        "what colour is the shape at the top left?",
        "what colour is the shape at the top right?",
        "how many shapes are there?",
    ]
    answers = ["circle", "square", "circle", "red", "blue", "one"]
    predictions = ["circle", "circle", "circle", "red", "red", "one"]
    r = score_answers(questions, answers, predictions)
    assert r.total == 6 and r.accuracy == pytest.approx(4 / 6)
    kind, colour, count = r.per_type["kind"], r.per_type["colour"], r.per_type["count"]
    assert (kind.correct, kind.total, kind.num_answers) == (2, 3, 2)
    assert kind.chance == pytest.approx(1 / 2) and kind.majority == pytest.approx(2 / 3)
    assert (colour.correct, colour.total, colour.chance) == (1, 2, 0.5)
    assert count.chance == 1.0  # one possible answer: the type is trivial, and says so
    assert r.chance == pytest.approx((3 * 0.5 + 2 * 0.5 + 1.0) / 6)
    assert [p["correct"] for p in r.predictions] == [True, False, True, True, False, True]
    with pytest.raises(TokredError):
        score_answers(questions, answers, predictions[:2])


def test_generation_chance_levels():
    c = generation_chance()
    assert c["kind"] == pytest.approx(1 / 3)
    assert c["color"] == c["position"] == pytest.approx(1 / 4)
    assert c["all"] == pytest.approx(1 / 48)


# ---- oracles ------------------------------------------------------------------------------
def test_understanding_oracle_scores_perfectly(setup):
    s = setup
    seqs = [encode_sample(r, c, s.vocab).ids for r, c in zip(s.und, s.und_codes, strict=True)]
    oracle = Oracle(seqs, s.vocab.vocab_size, s.vocab.eos_id)
    r = evaluate_understanding(oracle, s.vocab, s.und_codes, s.und, mode="reduced", batch_size=7)
    assert r.accuracy == 1.0 and r.total == len(s.und)
    assert set(r.per_type) == {"kind", "colour", "position", "count"}
    assert r.per_type["kind"].chance == pytest.approx(1 / 3)
    assert all(p["prediction"] == p["answer"] for p in r.predictions)


def test_understanding_constant_answer_scores_its_share(setup):
    s = setup
    circle = s.vocab.encode_text("circle")
    assert len(circle) == 1

    class AlwaysCircle(Oracle):
        def forward(self, input_ids, attention_mask, position_ids=None, **kwargs):
            logits = torch.zeros(input_ids.shape[0], 1, self.vocab_size)
            last = input_ids[:, -1]
            logits[:, 0, circle[0]] = 10.0
            logits[last == circle[0], 0, s.vocab.eos_id] = 20.0
            return SimpleNamespace(logits=logits)

    model = AlwaysCircle([], s.vocab.vocab_size, 0)
    r = evaluate_understanding(model, s.vocab, s.und_codes, s.und, mode="reduced")
    expected = sum(q["answer"] == "circle" for q in s.und) / len(s.und)
    assert r.accuracy == pytest.approx(expected)
    assert {p["prediction"] for p in r.predictions} == {"circle"}


def test_generation_teacher_forcing_oracle_matches_ground_truth(setup):
    s = setup
    codes = s.vq.encode(s.train["image"])
    seqs = [
        encode_sample({"task": "generation", "prompt": r["prompt"]}, codes[i], s.vocab).ids
        for i, r in enumerate(s.gen)
    ]
    oracle = Oracle(seqs, s.vocab.vocab_size, s.vocab.eoi_id)
    g = evaluate_generation(oracle, s.vocab, s.vq, s.gen, mode="reduced", batch_size=10)
    assert torch.equal(g.codes, codes)
    assert np.array_equal(g.images, as_uint8_batch(s.train["image"]))  # lossless VQ
    expected = [r["shapes"][0] for r in s.gen]
    truth = score(as_uint8_batch(s.train["image"]), expected)
    for attr in ("kind", "color", "position", "all"):
        assert g.per_attribute[attr] == truth[attr] == 1.0
    assert g.empty == 0 and g.total == len(s.gen)
    # The same scoring straight from codes, and a wrong image fails its check.
    images, checks, acc = score_generated_codes(s.vq, codes, s.gen)
    assert acc["all"] == 1.0 and all(c["all"] for c in checks)
    blank = codes[:1].clone().fill_(int(s.vq.encode(np.full((1, 32, 32, 3), 255, np.uint8))[0, 0]))
    _, checks, acc = score_generated_codes(s.vq, blank, s.gen[:1])
    assert acc["all"] == 0.0 and not checks[0]["kind"]


def test_generation_is_constrained_to_image_codes(setup):
    s = setup

    class LovesText(Oracle):
        def forward(self, input_ids, attention_mask, position_ids=None, **kwargs):
            logits = torch.zeros(input_ids.shape[0], 1, self.vocab_size)
            logits[:, 0, s.vocab.eos_id] = 100.0  # text tokens win unless masked
            logits[:, 0, s.vocab.image_offset + 5] = 1.0
            return SimpleNamespace(logits=logits)

    g = evaluate_generation(
        LovesText([], s.vocab.vocab_size, 0), s.vocab, s.vq, s.gen[:3], mode="reduced"
    )
    assert bool((g.codes == 5).all())


# ---- the tiny model -----------------------------------------------------------------------
def test_tiny_model_generation_shapes_and_codes(setup):
    s = setup
    model = tiny_model(s.vocab)
    g = evaluate_generation(model, s.vocab, s.vq, s.gen[:5])
    assert g.mode == "cached"
    assert g.images.shape == (5, 32, 32, 3) and g.images.dtype == np.uint8
    assert g.codes.shape == (5, s.vq.num_tokens_per_image)
    assert int(g.codes.min()) >= 0 and int(g.codes.max()) < s.vq.codebook_size
    assert set(g.per_attribute) == {"kind", "color", "position", "all"}
    assert g.chance == generation_chance()


def test_cached_and_reduced_paths_agree_without_reduction(setup):
    s = setup
    model = tiny_model(s.vocab, seed=1)
    u_cached = evaluate_understanding(model, s.vocab, s.und_codes[:9], s.und[:9], mode="cached")
    gen_cached, _ = generate_image_codes(model, s.vocab, s.vq, [r["prompt"] for r in s.gen[:4]])
    # "reduced" on a model patched with `none`: the layout-aware forward without cache.
    with apply_reduction(model, "none", "shared"):
        u_red = evaluate_understanding(model, s.vocab, s.und_codes[:9], s.und[:9], mode="reduced")
        gen_red, mode = generate_image_codes(
            model, s.vocab, s.vq, [r["prompt"] for r in s.gen[:4]], mode="reduced"
        )
    assert mode == "reduced" and u_red.mode == "reduced"
    assert [p["prediction"] for p in u_cached.predictions] == [
        p["prediction"] for p in u_red.predictions
    ]
    assert torch.equal(gen_cached, gen_red)


def test_batched_left_padded_decoding_equals_one_by_one(setup):
    s = setup
    model = tiny_model(s.vocab, seed=2)
    prompts = []
    for r, c in zip(s.und[:6], s.und_codes[:6], strict=True):
        e = encode_sample(r, c, s.vocab, with_output=False)
        prompts.append(Prompt(e.ids, e.spans))
    assert len({len(p.ids) for p in prompts}) > 1  # the batch really is padded
    for mode in ("cached", "reduced"):
        with reduction_context(model, mode, "none" if mode == "reduced" else None) as resolved:
            batched = decode_batch(model, prompts, Task.UNDERSTANDING, 4, mode=resolved)
            single = torch.cat(
                [decode_batch(model, [p], Task.UNDERSTANDING, 4, mode=resolved) for p in prompts]
            )
        assert torch.equal(batched, single), mode


def test_reduced_run_is_evaluated_under_its_reduction(setup):
    s = setup
    model = tiny_model(s.vocab, seed=3)
    policies = {"understanding": "himix", "generation": build_policy("hmgen", num_shallow=1)}
    handle = apply_reduction(model, policies, "task")
    try:
        u = evaluate_understanding(model, s.vocab, s.und_codes[:5], s.und[:5])
        g = evaluate_generation(model, s.vocab, s.vq, s.gen[:3])
        assert u.mode == g.mode == "reduced"
        assert g.codes.shape == (3, s.vq.num_tokens_per_image)
        # Swapping the policies for one evaluation restores the run's own afterwards.
        before = handle.policies
        evaluate_understanding(model, s.vocab, s.und_codes[:2], s.und[:2], policies="none")
        assert handle.policies is before
    finally:
        handle.undo()
    # Policies on an unpatched model patch it only for the duration.
    u = evaluate_understanding(
        model, s.vocab, s.und_codes[:2], s.und[:2], policies={"understanding": "himix"}
    )
    assert u.mode == "reduced" and not hasattr(model, "_tokred_handle")


def test_seeded_sampling_is_reproducible(setup):
    s = setup
    model = tiny_model(s.vocab, seed=4)
    prompts = [r["prompt"] for r in s.gen[:3]]
    a, _ = generate_image_codes(model, s.vocab, s.vq, prompts, temperature=1.0, seed=7)
    b, _ = generate_image_codes(model, s.vocab, s.vq, prompts, temperature=1.0, seed=7)
    c, _ = generate_image_codes(model, s.vocab, s.vq, prompts, temperature=1.0, seed=8, top_k=3)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert int(c.max()) < s.vq.codebook_size


def test_decode_errors(setup):
    s = setup
    model = tiny_model(s.vocab)
    with pytest.raises(TokredError, match="decode mode"):
        evaluate_understanding(model, s.vocab, s.und_codes[:1], s.und[:1], mode="fast")
    with pytest.raises(TokredError, match="cached"):
        evaluate_understanding(
            model, s.vocab, s.und_codes[:1], s.und[:1], mode="cached", policies="himix"
        )
    with pytest.raises(TokredError, match="code rows"):
        evaluate_understanding(model, s.vocab, s.und_codes[:1], s.und[:2])
    with pytest.raises(TokredError, match="nothing to check"):
        evaluate_generation(model, s.vocab, s.vq, [{"prompt": "a red circle"}])


# ---- the grid -----------------------------------------------------------------------------
def test_sample_grid_png(tmp_path, setup):
    s = setup
    images = as_uint8_batch(s.train["image"])[:6]
    path = save_sample_grid(
        images,
        [r["prompt"] for r in s.gen[:6]],
        tmp_path / "sub" / "grid.png",
        columns=4,
        cell=64,
        marks=[True, False, None, True, True, False],
        references=images,
        title="samples",
    )
    with Image.open(path) as im:
        im.load()
        assert im.format == "PNG" and im.mode == "RGB"
        assert im.width > 4 * 64 and im.height > 2 * 64
    with pytest.raises(TokredError):
        save_sample_grid(images, ["one prompt"], tmp_path / "bad.png")
