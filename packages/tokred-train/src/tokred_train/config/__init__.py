"""The training config: a tree of dataclasses (`schema`), loaded from YAML plus
`key=value` overrides (`loader`).

    config = load_config("apps/tokred/src/tokred/configs/tiny-shapes.yaml", ["optim.lr=1e-3"])
"""

from .loader import apply_overrides, config_to_dict, load_config, save_config
from .schema import (
    DATA_KINDS,
    DataConfig,
    EvalConfig,
    LoraConfig,
    ModelConfig,
    OptimConfig,
    PolicySpec,
    ReductionConfig,
    RunConfig,
    TrainConfig,
    check_policies_fit,
    split_data_path,
)
from .strategy import SURGERIES, StrategyConfig

__all__ = [
    "DATA_KINDS",
    "DataConfig",
    "EvalConfig",
    "LoraConfig",
    "ModelConfig",
    "OptimConfig",
    "PolicySpec",
    "ReductionConfig",
    "RunConfig",
    "StrategyConfig",
    "SURGERIES",
    "TrainConfig",
    "apply_overrides",
    "check_policies_fit",
    "config_to_dict",
    "load_config",
    "save_config",
    "split_data_path",
]
