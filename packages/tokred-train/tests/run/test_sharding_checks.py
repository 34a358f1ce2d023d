"""What FSDP2 cannot run is refused before any data or weights load, in one line naming
the setting (the process-group case runs through `tokred train` in the app's catalogue)."""

from __future__ import annotations

import pytest
import torch
from tokred_core import TokredError
from tokred_train.run.distributed import DistInfo
from tokred_train.run.sharding import check_sharding
from tokred_train.testing import tiny_run_config

TWO_RANKS = DistInfo(rank=0, world_size=2, local_rank=0)
CPU = torch.device("cpu")


@pytest.mark.parametrize(
    "sections, expected",
    [
        ({}, None),
        ({"lora": {"enabled": True, "quantize_4bit": True}}, "lora.quantize_4bit=true"),
        ({"run": {"conflict_every": 5}}, "run.conflict_every"),
        ({"run": {"fsdp_cpu_offload": True}}, "run.fsdp_cpu_offload=true offloads"),
    ],
)
def test_unsupported_combinations_under_fsdp_are_one_line(tmp_path, sections, expected):
    run = {"distributed": "fsdp", **sections.pop("run", {})}
    cfg = tiny_run_config(tmp_path, run=run, **sections)
    if expected is None:
        check_sharding(cfg, TWO_RANKS, CPU)
        return
    with pytest.raises(TokredError, match=expected) as err:
        check_sharding(cfg, TWO_RANKS, CPU)
    assert "\n" not in str(err.value) and "run." in str(err.value)


def test_fsdp_needs_a_process_group_and_ddp_in_one_process_is_fine(tmp_path):
    one = DistInfo()
    check_sharding(tiny_run_config(tmp_path), one, CPU)
    with pytest.raises(TokredError, match="needs a process group"):
        check_sharding(tiny_run_config(tmp_path, run={"distributed": "fsdp"}), one, CPU)
    with pytest.raises(TokredError, match="needs run.distributed=fsdp"):
        check_sharding(tiny_run_config(tmp_path, run={"fsdp_cpu_offload": True}), one, CPU)
