"""`tokred bench`'s engine: wall-clock of reduction plans, executed several ways, against
the cost model. One concept per module:

shapes   the decoder sizes and canonical batch timed (presets, or a config.json)
cases    the policies timed, each on its own task's batch
arms     the ways of executing one plan: tokred, masking-only, renumbered-gather
measure  interleaved timing, memory, the probe's cost, the sweep over sequence length
results  the JSON-serialisable result
report   the result as a table
"""

from .arms import ARM_NAMES, BenchBatch, make_batch, open_arm
from .cases import DEFAULT_POLICIES, BenchCase, parse_cases
from .measure import check_device, efficiency, machine_info, run_bench
from .report import efficiency_series, render_table
from .results import ArmResult, BenchResult, CaseResult, ProbeResult, Spread, SweepPoint
from .shapes import BENCH_PRESETS, BenchShape, load_bench_shape

__all__ = [
    "ARM_NAMES",
    "BenchBatch",
    "make_batch",
    "open_arm",
    "DEFAULT_POLICIES",
    "BenchCase",
    "parse_cases",
    "check_device",
    "efficiency",
    "machine_info",
    "run_bench",
    "efficiency_series",
    "render_table",
    "ArmResult",
    "BenchResult",
    "CaseResult",
    "ProbeResult",
    "Spread",
    "SweepPoint",
    "BENCH_PRESETS",
    "BenchShape",
    "load_bench_shape",
]
