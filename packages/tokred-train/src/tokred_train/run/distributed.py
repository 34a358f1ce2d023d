"""Rank awareness: who am I in a `torchrun` job, and which process writes.

Single-process runs (no RANK/WORLD_SIZE in the environment) see rank 0 of 1 and never
touch torch.distributed. Under torchrun every rank trains on its own slice of each global
batch; gradients are averaged by DistributedDataParallel or reduce-scattered by FSDP2
(run.distributed, run/sharding.py); only rank 0 logs and writes the config and the
summary (`is_main`), and the checkpoints under ddp (under fsdp every rank writes its
shards: run/sharded_checkpoint.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from tokred_core import TokredError

__all__ = [
    "DistInfo",
    "dist_info",
    "init_distributed",
    "barrier",
    "global_sum",
    "shutdown_distributed",
]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise TokredError(f"environment variable {name}={value!r} must be an integer") from None


def dist_info() -> DistInfo:
    """Rank, world size and local rank from the torchrun environment (0, 1, 0 without it)."""
    info = DistInfo(_env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0))
    if not 0 <= info.rank < info.world_size:
        raise TokredError(f"RANK={info.rank} is outside 0..WORLD_SIZE-1 ({info.world_size - 1})")
    return info


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group when launched by torchrun (NCCL on CUDA, gloo otherwise)."""
    info = dist_info()
    if info.distributed:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return info


def barrier(info: DistInfo) -> None:
    if info.distributed:
        import torch.distributed as dist

        dist.barrier()


def global_sum(value: int, info: DistInfo, device: torch.device) -> torch.Tensor | int:
    """`value` summed over the ranks: a tensor on the collective's device under torchrun
    (NCCL reduces CUDA tensors, gloo CPU ones; left there so the caller does not wait on
    the device), `value` itself in one process."""
    if not info.distributed:
        return value
    import torch.distributed as dist

    on = device if dist.get_backend() == "nccl" else torch.device("cpu")
    total = torch.tensor(float(value), device=on)
    dist.all_reduce(total)
    return total.to(device, non_blocking=True)


def shutdown_distributed(info: DistInfo) -> None:
    if info.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
