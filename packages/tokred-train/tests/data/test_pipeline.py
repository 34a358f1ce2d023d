"""The data side of training: the embedded shapes pipeline, real formats into a tiny run,
and batches that follow the sampler."""

from __future__ import annotations

import json

import pytest
from tokred_core import Segment, Task, TokredError
from tokred_train import load_config, train
from tokred_train.data.pipeline import build_embedded_data
from tokred_train.data.protocols import ImageTokenizer, TokenVocab
from tokred_train.run.sampler import MixedBatchSampler

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def test_shapes_pipeline_encodes_once_and_batches_mix_tasks():
    cfg = load_config(
        None,
        ["data.num_train=6", "data.num_val=2", "data.image_size=16", "data.codebook_size=8"],
    ).data
    data = build_embedded_data(cfg)
    assert isinstance(data.vocab, TokenVocab) and isinstance(data.image_tokenizer, ImageTokenizer)
    assert data.sizes() == {"understanding": 24, "generation": 6}
    assert data.sizes("val") == {"understanding": 8, "generation": 2}
    assert data.train["generation"].codes.shape == (6, 16)
    sampler = MixedBatchSampler(data.sizes(), 0.75, 4, seed=0)
    batch = data.collate(sampler.draw(0))
    layout = batch["layout"]
    assert layout.tasks.tolist() == [Task.UNDERSTANDING] * 3 + [Task.GENERATION]
    assert batch["input_ids"].shape == layout.segments.shape
    gen_out = batch["input_ids"][3][layout.segments[3] == Segment.OUTPUT]
    assert bool(data.vocab.is_image_id(gen_out[:-1]).all()) and gen_out[-1] == data.vocab.eoi_id


def test_real_formats_train_the_tiny_model(tmp_path, real_data):
    overrides = [
        "data.kind=llava",
        f"data.paths=[llava:{tmp_path / 'llava.json'}, jsonl:{tmp_path / 'gen.jsonl'}]",
        f"data.image_root={tmp_path / 'img'}",
        "data.num_val=1",
        "data.image_size=16",
        "data.codebook_size=8",
        "model.hidden_size=32",
        "model.intermediate_size=64",
        "model.num_layers=2",
        "optim.batch_size=4",
        "optim.max_steps=2",
        f"run.out_dir={tmp_path / 'run'}",
        "run.progress=false",
        "run.tensorboard=false",
        "run.threads=1",
    ]
    # The bad record stops the run, naming it, unless bad images are skipped.
    with pytest.raises(TokredError, match="'bad'.*image file not found"):
        train(load_config(None, overrides))
    result = train(load_config(None, [*overrides, "data.on_bad_image=skip"]))
    assert result.data.info["skipped"] == 1
    assert result.data.sizes() == {"understanding": 5, "generation": 5}
    assert result.data.sizes("val") == {"understanding": 1, "generation": 1}
    assert [h["step"] for h in result.history] == [1, 2]
    assert result.history[-1]["loss_understanding"] is not None
    assert "val_loss_generation" in result.metrics


def test_a_sample_over_max_length_is_refused_at_build_time_by_record_and_file(tmp_path, real_data):
    long = {"prompt": " ".join(["red"] * 50), "image": "0.png"}
    with open(tmp_path / "gen.jsonl", "a") as f:
        f.write(json.dumps(long) + "\n")
    overrides = [
        "data.kind=jsonl",
        f"data.paths=[{tmp_path / 'gen.jsonl'}]",
        f"data.image_root={tmp_path / 'img'}",
        "data.understanding_ratio=0",
        "data.num_val=1",
        "data.image_size=16",
        "data.codebook_size=8",
        "data.max_length=48",
    ]
    cfg = load_config(None, overrides).data
    with pytest.raises(
        TokredError, match=rf"^line 7 of {tmp_path}/gen.jsonl: \d+ tokens, over data.max_length=48"
    ):
        build_embedded_data(cfg)
    # Without data.max_length the model's positions bound it: the tiny model's, here 48.
    from tokred_train.built_run import build_run

    config = load_config(None, [*overrides[:-1], "model.max_positions=48", "run.out_dir=x"])
    with pytest.raises(
        TokredError, match=r"^line 7 of .*: \d+ tokens, over model.max_positions=48"
    ):
        build_run(config, "cpu")
