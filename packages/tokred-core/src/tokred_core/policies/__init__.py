"""Reduction policies, one file each, registered by name."""

from . import aligned, fastv, himix, hmgen, none, pyramid_drop, random_drop, router  # noqa: F401
from .aligned import Aligned, AlignedConfig, aligned_band
from .base import (
    Policy,
    PolicyConfig,
    available_policies,
    build_policy,
    policy_class,
    register_policy,
)
from .composite import TaskPolicies
from .fastv import FastV, FastVConfig
from .himix import HiMix, HiMixConfig
from .hmgen import HMGen, HMGenConfig, shallow_layers
from .none import NoReduction
from .pyramid_drop import PyramidDrop, PyramidDropConfig
from .random_drop import RandomDrop, RandomDropConfig
from .router import Router, RouterConfig, routed_layers
from .spec import parse_policy, parse_task_policies, split_policy_spec

__all__ = [
    "Aligned",
    "AlignedConfig",
    "aligned_band",
    "Policy",
    "PolicyConfig",
    "available_policies",
    "build_policy",
    "policy_class",
    "register_policy",
    "parse_policy",
    "parse_task_policies",
    "split_policy_spec",
    "TaskPolicies",
    "NoReduction",
    "HiMix",
    "HiMixConfig",
    "HMGen",
    "HMGenConfig",
    "shallow_layers",
    "FastV",
    "FastVConfig",
    "PyramidDrop",
    "PyramidDropConfig",
    "RandomDrop",
    "RandomDropConfig",
    "Router",
    "RouterConfig",
    "routed_layers",
]
