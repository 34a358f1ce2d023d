"""The parts of a run's strategy section (config/strategy.py) the training loop calls:
the step planner (full steps, distillation, the gate's full layers), the gradient
surgery and the conflict gate, each None when off. Checked against the run here, where
the distribution and the reduction are known, with one line naming the key."""

from __future__ import annotations

from tokred_core import TokredError

from ..config import TrainConfig
from .full_steps import StepPlanner
from .gate import ConflictGate
from .setup import RunSetup
from .sharding import is_sharded
from .surgery import PCGrad

__all__ = ["strategy_parts"]


def strategy_parts(
    config: TrainConfig, setup: RunSetup
) -> tuple[StepPlanner | None, PCGrad | None, ConflictGate | None]:
    strategy, handle = config.strategy, setup.run.handle
    needs_reduction = strategy.full_steps > 0 or strategy.gate_threshold is not None
    if needs_reduction and handle is None:
        raise TokredError(
            "strategy: full steps and gating switch a reduction off and on, but this run "
            "has no reduction (set reduction.understanding or reduction.generation)"
        )
    planner = None if handle is None else StepPlanner(handle, strategy, config.optim.grad_accum)
    surgery = None
    # One trained task has nothing to conflict with: the surgery would change nothing.
    if strategy.surgery == "pcgrad" and len(config.data.train_tasks) == 2:
        if is_sharded(setup.trained):
            raise TokredError(
                "strategy.surgery=pcgrad: not under run.distributed=fsdp (each rank holds a "
                "shard of each task's gradient); use DDP or one process"
            )
        surgery = PCGrad(setup.params, setup.dist.world_size)
    gate = None
    if strategy.gate_threshold is not None:
        gate = ConflictGate(strategy.gate_threshold, strategy.gate_hysteresis)
        if setup.start_step:
            gate.resume(setup.run_dir, setup.start_step)
            assert planner is not None
            planner.full_layers = gate.full_layers
    return planner, surgery, gate
