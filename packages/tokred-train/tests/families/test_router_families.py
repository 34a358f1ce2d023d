"""The router policy (mixture-of-depths) trains the real families' tiny stand-ins: Janus
under QLoRA (its routers trained in full beside the adapters) and Emu3 in full fine-tuning,
with a router on one task beside HiMix / HMGen on the other, and on both tasks."""

from __future__ import annotations

import math

import pytest
from tokred_train import train
from tokred_train.testing import (
    retrain,
    tiny_run_config,
)

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")

QLORA = {"enabled": True, "quantize_4bit": True, "r": 4}


def _trains_its_routers(tmp_path, folder, reduction, lora=None):
    sections = {"reduction": reduction, "optim": {"max_steps": 2}, "eval": {"at_end": False}}
    if lora:
        sections["lora"] = lora
    cfg = tiny_run_config(tmp_path / "run", folder, **sections)
    result, moved = retrain(train(cfg, stop_after_step=0))
    for h in result.history:
        assert math.isfinite(h["loss_understanding"]) and math.isfinite(h["loss_generation"])
    return result, {n for n in moved if ".token_router." in n}


def test_janus_qlora_trains_routers_on_both_tasks(tmp_path, janus_dir):
    reduction = {
        "understanding": {"policy": "router", "options": {"capacity": 0.5}},
        "generation": {"policy": "router", "options": {"capacity": 0.5}},
        "sharing": "task",
    }
    result, routers = _trains_its_routers(tmp_path, janus_dir, reduction, QLORA)
    assert {n.split(".token_router.")[1].split(".")[0] for n in routers} == {
        "understanding",
        "generation",
    }
    assert result.built.lora is not None and result.built.lora.routers


def test_emu3_trains_a_generation_router_beside_himix(tmp_path, emu3_dir):
    reduction = {
        "understanding": "himix",
        "generation": {"policy": "router", "options": {"capacity": 0.5}},
        "sharing": "task",
    }
    _, routers = _trains_its_routers(tmp_path, emu3_dir, reduction)
    assert routers and all(".token_router.generation." in n for n in routers)
