"""Decoding Janus through evaluation's loop (`JanusForDecoding`), against references:
Hugging Face's own `generate` for answers, a plain full-recompute loop for image codes,
and the cached path against the reduced one."""

from __future__ import annotations

import pytest
import torch
from tokred_core import Task, build_policy
from tokred_train import load_config, train
from tokred_train.data.collate import encode_sample
from tokred_train.eval.decode import Prompt, decode_batch, reduction_context
from tokred_train.eval.janus import JanusForDecoding
from tokred_train.testing import save_tiny_janus, shapes_texts

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("janus_eval")
    folder = save_tiny_janus(tmp / "janus", shapes_texts(8, 2), layers=3)
    cfg = load_config(
        {
            "model": {"kind": "hf", "path": str(folder), "dtype": "float32"},
            "data": {"num_train": 8, "num_val": 2, "image_size": 16},
            "reduction": {"understanding": "none", "generation": "none", "sharing": "shared"},
            "run": {"out_dir": str(tmp / "run"), "progress": False, "tensorboard": False},
        }
    )
    result = train(cfg, stop_after_step=0)
    result.built.base.eval()
    return result


def _prompts(run, task, indices):
    samples = run.data.train[task.name.lower()]
    recs, codes = samples.take(indices)
    out = []
    for i, (r, c) in enumerate(zip(recs, codes, strict=True)):
        s = encode_sample(r, c, run.vocab, run.data.system_prompt, with_output=False, index=i)
        out.append(Prompt(s.ids, s.spans))
    pixels = samples.take_pixels(indices)
    if pixels is not None:
        pixels = run.data.understanding_pixels.normalize(pixels.numpy())
    return out, pixels


def test_answers_equal_hugging_face_generate(run):
    janus, vocab = run.built.base, run.vocab
    prompts, pixels = _prompts(run, Task.UNDERSTANDING, [0, 3])
    decoder = JanusForDecoding(janus, Task.UNDERSTANDING, vocab.boi_id)
    for i, prompt in enumerate(prompts):
        ours = decode_batch(
            decoder,
            [prompt],
            Task.UNDERSTANDING,
            6,
            mode="cached",
            pad_id=vocab.pad_id,
            model_kwargs={"pixel_values": pixels[i : i + 1]},
        )[0]
        ids = torch.tensor([prompt.ids])
        hf = janus.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            pixel_values=pixels[i : i + 1],
            max_new_tokens=6,
            do_sample=False,
            pad_token_id=vocab.pad_id,
        )[0, ids.shape[1] :]
        assert ours[: len(hf)].tolist() == hf.tolist()


def test_codes_equal_a_full_recompute_loop(run):
    from tokred_models.janus_generation import janus_input_embeddings

    janus, vocab = run.built.base, run.vocab
    prompts, _ = _prompts(run, Task.GENERATION, [1, 2])
    decoder = JanusForDecoding(janus, Task.GENERATION, vocab.boi_id)
    steps = 5
    ours = decode_batch(
        decoder, prompts, Task.GENERATION, steps, mode="cached", pad_id=vocab.pad_id
    )
    for row, prompt in zip(ours, prompts, strict=True):
        ids = list(prompt.ids)
        for _ in range(steps):
            x = torch.tensor([ids])
            codes = torch.zeros_like(x, dtype=torch.bool)
            codes[0, len(prompt.ids) :] = True
            with torch.no_grad():
                hidden = janus.model.language_model(
                    inputs_embeds=janus_input_embeddings(janus, x, codes)
                ).last_hidden_state
                ids.append(int(janus.model.generation_head(hidden[:, -1]).argmax(-1)))
        assert row.tolist() == ids[len(prompt.ids) :]
        assert int(row.max()) < run.vq.codebook_size


@pytest.mark.parametrize("task", [Task.UNDERSTANDING, Task.GENERATION])
def test_cached_equals_reduced_and_reductions_decode(run, task):
    janus, vocab = run.built.base, run.vocab
    prompts, pixels = _prompts(run, task, [0, 1, 2])
    extra = {"pixel_values": pixels} if pixels is not None else None
    decoder = JanusForDecoding(janus, task, vocab.boi_id)
    kw = dict(pad_id=vocab.pad_id, model_kwargs=extra)
    cached = decode_batch(decoder, prompts, task, 4, mode="cached", **kw)
    reduced = decode_batch(decoder, prompts, task, 4, mode="reduced", **kw)
    assert torch.equal(cached, reduced)
    policies = {"understanding": "himix", "generation": build_policy("hmgen", num_shallow=1)}
    with reduction_context(decoder, "auto", policies) as mode:
        assert mode == "reduced"
        out = decode_batch(decoder, prompts, task, 4, mode=mode, **kw)
    assert out.shape == (3, 4)


def test_guided_codes_equal_a_two_pass_reference(run):
    """Classifier-free guidance: the prompt with its text blanked to padding is the
    unconditional pass; logits = uncond + w * (cond - uncond), as Janus samples."""
    from tokred_models.janus_generation import janus_input_embeddings

    janus, vocab = run.built.base, run.vocab
    prompts, _ = _prompts(run, Task.GENERATION, [0, 3])
    w, steps = 3.0, 4
    guided = JanusForDecoding(
        janus, Task.GENERATION, vocab.boi_id, cfg_weight=w, pad_id=vocab.pad_id
    )
    ours = decode_batch(guided, prompts, Task.GENERATION, steps, mode="cached", pad_id=vocab.pad_id)
    reduced = decode_batch(
        guided, prompts, Task.GENERATION, steps, mode="reduced", pad_id=vocab.pad_id
    )
    assert torch.equal(ours, reduced)

    def logits(ids, n_prompt):
        x = torch.tensor([ids])
        codes = torch.zeros_like(x, dtype=torch.bool)
        codes[0, n_prompt:] = True
        hidden = janus.model.language_model(
            inputs_embeds=janus_input_embeddings(janus, x, codes)
        ).last_hidden_state
        return janus.model.generation_head(hidden[:, -1])[0]

    for row, prompt in zip(ours, prompts, strict=True):
        n = len(prompt.ids)
        cond = list(prompt.ids)
        free = [cond[0], *[vocab.pad_id] * (n - 2), cond[-1]]
        for _ in range(steps):
            with torch.no_grad():
                c, u = logits(cond, n), logits(free, n)
            nxt = int((u + w * (c - u)).argmax())
            cond.append(nxt)
            free.append(nxt)
        assert row.tolist() == cond[n:]
    plain = decode_batch(
        JanusForDecoding(janus, Task.GENERATION, vocab.boi_id),
        prompts,
        Task.GENERATION,
        steps,
        mode="cached",
        pad_id=vocab.pad_id,
    )
    assert not torch.equal(plain, ours)  # guidance changes what is drawn
