"""FSDP2 for `run.distributed=fsdp`: the step module sharded across the ranks.

`fully_shard` goes on every decoder layer, then on the `TrainStep` as the root. The root
is the step module, not the Hugging Face model, because the step runs the model's
submodules (the decoder, then the output head at the target rows; step.py), not its
`forward`: the root's hooks gather what the layers do not hold (the embeddings, the final
norm, the heads, an encoder) around exactly what a step runs. Each layer is gathered
before its forward and freed after it, and its gradients are reduce-scattered as its
backward ends. The per-task paths run the same modules on every rank whatever tasks its
micro-batch holds (tokred_models.spmd), so the collectives pair up.

Mixed precision: bfloat16 parameters with float32 gradient reduction where the run uses
bf16 (run.bf16, on by default on CUDA), float32 otherwise. Activation checkpointing
(run.gradient_checkpointing) recomputes inside each layer's forward, so it sits inside the
layer's FSDP unit, the order FSDP2 expects. The optimizer is built after sharding, on the
sharded parameters.
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from typing import Any

import torch
from tokred_core import TokredError
from torch import nn

from ..config import TrainConfig
from .distributed import DistInfo

__all__ = [
    "check_sharding",
    "full_value",
    "gradient_sync",
    "is_sharded",
    "reshard",
    "shard_step_module",
]


def check_sharding(config: TrainConfig, dist: DistInfo, device: torch.device) -> None:
    """Refuse, in one line naming the setting, what FSDP2 cannot run here."""
    if config.run.distributed != "fsdp":
        if config.run.fsdp_cpu_offload:
            raise TokredError("run.fsdp_cpu_offload=true needs run.distributed=fsdp")
        return
    if config.run.fsdp_cpu_offload and device.type != "cuda":
        raise TokredError(
            f"run.fsdp_cpu_offload=true offloads a GPU's shards to the CPU, but this run "
            f"trains on {device.type}; set run.fsdp_cpu_offload=false"
        )
    if not dist.distributed:
        raise TokredError(
            "run.distributed=fsdp needs a process group: launch with torchrun "
            "--nproc_per_node=N (N >= 2), or use run.distributed=ddp in one process"
        )
    if config.lora.quantize_4bit:
        raise TokredError(
            "run.distributed=fsdp with lora.quantize_4bit=true: bitsandbytes' 4-bit weights "
            "(Params4bit with their quantization state) cannot be sharded by FSDP2's "
            "fully_shard; train QLoRA with run.distributed=ddp, or LoRA/full under fsdp"
        )
    if config.run.conflict_every:
        raise TokredError(
            "run.conflict_every with run.distributed=fsdp: the gradient-conflict probe reads "
            "whole per-task gradients on one process; set run.conflict_every=0 or use ddp"
        )


def shard_step_module(
    step_module: nn.Module, layers: nn.ModuleList, config: TrainConfig, bf16: bool
) -> nn.Module:
    """`fully_shard` each decoder layer, then the step module (in place); returns it."""
    from torch.distributed.fsdp import (
        CPUOffloadPolicy,
        MixedPrecisionPolicy,
        OffloadPolicy,
        fully_shard,
    )

    precision = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if bf16
        else MixedPrecisionPolicy()
    )
    offload = CPUOffloadPolicy() if config.run.fsdp_cpu_offload else OffloadPolicy()
    _count_autograd_devices_now()
    for layer in layers:
        fully_shard(layer, mp_policy=precision, offload_policy=offload)
    fully_shard(step_module, mp_policy=precision, offload_policy=offload)
    return step_module


def _count_autograd_devices_now() -> None:
    """Make the autograd engine count this machine's devices before FSDP2 can fake some.

    Why: the engine counts the devices of each kind once, at the process's first
    backward, and starts a worker thread per device. DTensor's sharding propagation can
    enter FakeTensorMode, which on a machine without CUDA installs a fake CUDA device
    guard reporting 8 devices (torch._C._ensureCUDADeviceGuardSet). Counted after that,
    a CPU rank started 8 CUDA autograd threads (pt_autograd_0..7) that never ran a task,
    and those threads race the interpreter's teardown: a rank that had trained and written
    everything sometimes died at exit with SIGABRT ("terminate called without an active
    exception"), which torchrun reports as a failed job. A backward through one scalar,
    before the first fully_shard, makes the count the machine's own (none on a CPU host;
    the real GPUs on a CUDA one, whose threads a GPU backward starts anyway).
    """
    torch.zeros((), requires_grad=True).backward()


def is_sharded(module: nn.Module) -> bool:
    """Whether `module` went through `fully_shard` (its class is FSDP2's subclass)."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


def full_value(tensor: Any) -> Any:
    """A DTensor's whole value (a gradient norm over sharded parameters), else as it is."""
    full = getattr(tensor, "full_tensor", None)
    return full() if callable(full) else tensor


def gradient_sync(trained: nn.Module, distributed: bool, last: bool) -> AbstractContextManager[Any]:
    """Around one micro-batch's forward and backward: gradients are reduced across the
    ranks only in the step's last one (DDP's no_sync; FSDP2's requires_gradient_sync)."""
    if not distributed:
        return contextlib.nullcontext()
    if is_sharded(trained):
        trained.set_requires_gradient_sync(last)  # type: ignore[operator]
        return contextlib.nullcontext()
    return trained.no_sync() if not last else contextlib.nullcontext()  # type: ignore[operator]


def reshard(module: nn.Module) -> None:
    """Free the gathered parameters a forward without a backward left (FSDP2 keeps the
    root's gathered after its forward, for the backward that validation never runs), so
    that checkpoints and the next step see shards everywhere."""
    from torch.distributed.fsdp import FSDPModule

    for sub in module.modules():
        if isinstance(sub, FSDPModule):
            sub.reshard()
