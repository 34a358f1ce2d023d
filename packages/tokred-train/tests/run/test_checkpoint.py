"""Checkpoints: atomic layout, `latest`, rotation, partial writes ignored, exact round trip."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch
from tokred_core import TokredError
from tokred_train.run.checkpoint import (
    LATEST,
    MARKER,
    capture_rng_state,
    find_latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    remove_partial_checkpoints,
    restore_rng_state,
    save_checkpoint,
    trainable_state_dict,
)
from torch import nn


def setup(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    model[0].bias.requires_grad_(False)  # frozen: not saved
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (s + 1))
    return model, opt, sched


def step(model, opt, sched):
    loss = model(torch.randn(3, 4)).pow(2).sum()
    loss.backward()
    opt.step()
    sched.step()
    opt.zero_grad()


def test_round_trip_is_exact(tmp_path):
    model, opt, sched = setup()
    for _ in range(3):
        step(model, opt, sched)
    path = save_checkpoint(tmp_path, 3, model, opt, sched, extra={"data": {"micro": 3}})
    assert path.name == "step-000003" and (path / MARKER).is_file()
    assert (tmp_path / "checkpoints" / LATEST).read_text().strip() == "step-000003"
    assert "0.bias" not in trainable_state_dict(model)
    expected = [random.random(), float(np.random.rand()), torch.rand(1).item()]
    step(model, opt, sched)
    after = {k: v.clone() for k, v in model.state_dict().items()}

    model2, opt2, sched2 = setup(seed=1)
    model2[0].bias.data.copy_(model[0].bias.data)  # the frozen part comes from the build
    state = load_checkpoint(path, model2, opt2, sched2)
    assert state["step"] == 3 and state["data"] == {"micro": 3}
    assert [random.random(), float(np.random.rand()), torch.rand(1).item()] == expected
    step(model2, opt2, sched2)  # the same random batch as the original's step 4
    for k, v in model2.state_dict().items():
        assert torch.equal(v, after[k]), k
    assert sched2.get_last_lr() == sched.get_last_lr()


def test_rng_state_round_trip():
    state = capture_rng_state()
    a = (random.random(), np.random.rand(), torch.rand(2))
    restore_rng_state(state)
    b = (random.random(), np.random.rand(), torch.rand(2))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])


def test_rotation_and_partial_checkpoints(tmp_path):
    model, opt, sched = setup()
    for s in (1, 2, 3):
        save_checkpoint(tmp_path, s, model, opt, sched, keep=2)
    assert [c.step for c in list_checkpoints(tmp_path)] == [2, 3]
    root = tmp_path / "checkpoints"
    # An interrupted write of step 4 and a marker-less step 5 are never read.
    (root / ".tmp-step-000004-1").mkdir()
    os.makedirs(root / "step-000005")
    (root / LATEST).write_text("step-000005\n")
    assert find_latest_checkpoint(tmp_path).step == 3
    with pytest.raises(TokredError, match="not a complete checkpoint"):
        load_checkpoint(root / "step-000005", model)
    # A marker whose files are missing does not count either.
    save_checkpoint(tmp_path, 6, model, opt, sched)
    (root / "step-000006" / "optimizer.pt").unlink()
    assert find_latest_checkpoint(tmp_path).step == 3
    # Both damaged ones were set aside, not deleted; only our own leftover is removed.
    aside = sorted(p.name.rsplit("-", 1)[0] for p in root.glob("damaged-*"))
    assert aside == ["damaged-step-000005", "damaged-step-000006"]
    removed = {p.name for p in remove_partial_checkpoints(tmp_path)}
    assert removed == {".tmp-step-000004-1"}
    # `latest` lagging behind a newer complete checkpoint (crash between the two renames).
    save_checkpoint(tmp_path, 7, model, opt, sched)
    (root / LATEST).write_text("step-000003\n")
    assert find_latest_checkpoint(tmp_path).step == 7


@pytest.mark.parametrize(
    "damage_it, reason",
    [
        (
            lambda d: (d / "model.safetensors").write_bytes(b"x" * 10),
            "model.safetensors has 10 bytes",
        ),
        (lambda d: _flip_last_byte(d / "trainer_state.pt"), "trainer_state.pt does not match"),
        (lambda d: (d / "COMPLETE").write_text("garbage"), "marker is not readable JSON"),
        (lambda d: (d / "optimizer.pt").unlink(), "optimizer.pt is missing"),
    ],
)
def test_a_damaged_newest_checkpoint_is_set_aside_and_the_older_one_used(
    tmp_path, caplog, damage_it, reason
):
    model, opt, sched = setup()
    save_checkpoint(tmp_path, 1, model, opt, sched)
    newest = save_checkpoint(tmp_path, 2, model, opt, sched)
    damage_it(newest)
    with caplog.at_level("WARNING", logger="tokred_train.run.checkpoint"):
        found = find_latest_checkpoint(tmp_path)
    assert found.step == 1
    load_checkpoint(found.path, model, opt, sched)
    (line,) = [r.getMessage() for r in caplog.records]
    assert "step-000002 is damaged" in line and reason in line and "moved aside" in line
    assert not newest.exists() and len(list(newest.parent.glob("damaged-step-000002-*"))) == 1


def _flip_last_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_shape_mismatch_is_one_line(tmp_path):
    model, opt, sched = setup()
    path = save_checkpoint(tmp_path, 1, model, opt, sched)
    wider = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    wider[0].bias.requires_grad_(False)  # frozen as in `setup`: the same names are saved
    with pytest.raises(TokredError, match=r"0.weight is \(.*\) in the checkpoint but"):
        load_checkpoint(path, wider)


def test_checkpoint_must_fit_the_model(tmp_path):
    model, opt, sched = setup()
    path = save_checkpoint(tmp_path, 1, model, opt, sched)
    other = nn.Sequential(nn.Linear(4, 8))
    with pytest.raises(TokredError, match="does not fit this model"):
        load_checkpoint(path, other)
