"""The training step against its reference: the model's own forward plus the loss on its
full logits, on a reduced, LoRA-adapted tiny model and a batch mixing both tasks."""

from __future__ import annotations

import pytest
import torch
from tokred_core import TokredError
from tokred_train import load_config, train
from tokred_train.run.losses import task_loss_sums
from tokred_train.run.step import TrainStep, batch_targets
from tokred_train.testing import HIMIX_HMGEN

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("step")
    cfg = load_config(
        {
            "model": {"hidden_size": 32, "intermediate_size": 64, "num_layers": 3},
            "data": {"num_train": 8, "num_val": 0, "image_size": 16, "patch_size": 4},
            "reduction": HIMIX_HMGEN,
            "lora": {"enabled": True, "r": 4},
            "run": {"out_dir": str(out / "run"), "progress": False, "tensorboard": False},
        }
    )
    return train(cfg, stop_after_step=0)


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_step_equals_forward_plus_loss_on_full_logits(run):
    model, base = run.model, run.built.base
    for p in model.parameters():  # LoRA's B starts at zero: move it so every path counts
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.05)
    batch = run.data.collate({"understanding": [0, 5, 2], "generation": [3, 0]})
    targets = batch_targets(batch, "causal_lm")
    assert all(targets.counts)

    model.zero_grad()
    sums = TrainStep(base)(batch, targets)
    sums.sum().backward()
    got = _grads(model)

    model.zero_grad()
    out = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        tokred_layout=batch["layout"],
        use_cache=False,
    )
    ref = task_loss_sums(out.logits, targets.text)
    ref.sum().backward()
    want = _grads(model)

    torch.testing.assert_close(sums, ref, rtol=1e-5, atol=1e-6)
    assert got.keys() == want.keys() and any("image_proj" in n for n in got)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-6, msg=name)


def test_step_refuses_wrappers_and_unpatched_models(run):
    with pytest.raises(TokredError, match="inside the peft wrapper"):
        TrainStep(run.model)
    with pytest.raises(TokredError, match="loss path 'seq2seq'"):
        TrainStep(run.built.base, "seq2seq")
    from tokred_models.tiny import TinyUnifiedConfig, build_tiny_unified_model

    bare = build_tiny_unified_model(TinyUnifiedConfig(vocab_size=40, hidden_size=32, num_layers=2))
    with pytest.raises(TokredError, match="not reduction-patched"):
        TrainStep(bare)
