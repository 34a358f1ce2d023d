"""Every process of a data-parallel or sharded job must run the same modules every step,
whatever tasks its micro-batch holds: FSDP2 pairs its all-gathers and reduce-scatters by
order, and DistributedDataParallel (without find_unused_parameters) waits for a gradient
of every trainable weight. So a micro-batch of one task alone must still hand every
trainable weight a gradient: zeros for the other task's projection sets, heads and
encoders, which run on zero rows."""

from __future__ import annotations

import pytest
import torch
from tokred_train import train
from tokred_train.run.step import batch_targets
from tokred_train.testing import HIMIX_HMGEN, save_tiny_janus, tiny_run_config, tiny_run_texts

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")

BATCHES = {
    "understanding only": {"understanding": [0, 3], "generation": []},
    "generation only": {"understanding": [], "generation": [1, 2]},
    "both": {"understanding": [1], "generation": [0]},
}


def _without_grad(result, parts):
    step = result_step(result)
    step.zero_grad(set_to_none=True)
    batch = result.data.collate(parts)
    step(batch, batch_targets(batch, result.data.loss_path)).sum().backward()
    return [n for n, p in step.named_parameters() if p.requires_grad and p.grad is None]


def result_step(result):
    from tokred_train.run.step import TrainStep

    return TrainStep(result.built.base, result.data.loss_path)


@pytest.mark.parametrize("sharing", ["task", "modality"])
@pytest.mark.parametrize("which", list(BATCHES))
def test_a_one_task_micro_batch_gives_every_weight_a_gradient(tmp_path, sharing, which):
    reduction = {**HIMIX_HMGEN, "sharing": sharing}
    result = train(tiny_run_config(tmp_path / "run", reduction=reduction), stop_after_step=0)
    missing = _without_grad(result, BATCHES[which])
    assert missing == [], missing[:5]


def test_a_one_task_micro_batch_gives_every_janus_weight_a_gradient(tmp_path):
    folder = save_tiny_janus(tmp_path / "janus", tiny_run_texts())
    cfg = tiny_run_config(tmp_path / "run", folder, reduction=HIMIX_HMGEN)
    result = train(cfg, stop_after_step=0)
    trainable = [n for n, p in result.built.base.named_parameters() if p.requires_grad]
    assert any("vision" in n for n in trainable)  # full fine-tuning: the encoder trains
    for which, parts in BATCHES.items():
        missing = _without_grad(result, parts)
        assert missing == [], (which, missing[:5])


def test_zero_rows_of_a_projection_set_leave_the_other_rows_unchanged():
    from tokred_models.projections import stacked_projection

    torch.manual_seed(0)
    modules = [torch.nn.Linear(5, 3) for _ in range(3)]
    x = torch.randn(7, 5)
    # Rows come ordered by group (schedule.py), so a grouping is its rows per group.
    for groups in ([0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 2, 2, 2, 2], [1] * 7, []):
        counts = [groups.count(k) for k in range(3)]
        rows = x[: len(groups)]
        out = stacked_projection(rows, [counts], modules)
        expected = (
            torch.stack([modules[k](r) for k, r in zip(groups, rows, strict=True)])
            if groups
            else None
        )
        if expected is None:
            assert out.shape == (0, 3)
        else:
            torch.testing.assert_close(out, expected)
        out.sum().backward()
        assert all(m.weight.grad is not None for m in modules)
        for m in modules:
            m.zero_grad(set_to_none=True)
