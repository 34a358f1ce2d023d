"""tokred-core: what to reduce. Pure torch: layouts, roles, plans, policies, sharing, cost, allocation."""

from .alignment import coinciding_layers, layer_projection_sets
from .allocation import key_segment_shares, key_segment_shares_by_query
from .cost import (
    CostReport,
    LayerCost,
    canonical_layout,
    canonical_spans,
    plan_cost,
    policy_cost,
)
from .errors import RunInterrupted, TokredError
from .layout import SEGMENT_NAMES, TASK_NAMES, Segment, Task, TokenLayout, parse_task
from .plans import ReductionPlan, Route, Selection, keep_counts
from .policies import (
    Policy,
    TaskPolicies,
    available_policies,
    build_policy,
    parse_policy,
    parse_task_policies,
    policy_class,
    split_policy_spec,
)
from .roles import ROLE_NAMES, Role
from .shapes import PRESETS, DecoderShape, load_shape
from .sharing import Sharing, image_sets, parse_sharing, projection_groups

__all__ = [
    "RunInterrupted",
    "TokredError",
    "Segment",
    "Task",
    "TokenLayout",
    "SEGMENT_NAMES",
    "TASK_NAMES",
    "parse_task",
    "Role",
    "ROLE_NAMES",
    "ReductionPlan",
    "Selection",
    "Route",
    "keep_counts",
    "Policy",
    "TaskPolicies",
    "available_policies",
    "build_policy",
    "parse_policy",
    "parse_task_policies",
    "split_policy_spec",
    "policy_class",
    "Sharing",
    "image_sets",
    "parse_sharing",
    "coinciding_layers",
    "layer_projection_sets",
    "projection_groups",
    "key_segment_shares",
    "key_segment_shares_by_query",
    "DecoderShape",
    "PRESETS",
    "load_shape",
    "CostReport",
    "LayerCost",
    "plan_cost",
    "policy_cost",
    "canonical_spans",
    "canonical_layout",
]
