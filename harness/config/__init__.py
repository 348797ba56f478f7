"""Typed, nested run configuration: defaults <- YAML <- ``section.key=value`` overrides, validated.

The schema is a tree of dataclasses. It accepts V-JEPA 2 video-classifier YAML files as they
are (sections ``data``, ``data_aug``, ``meta``, ``model``, ``optimization`` and top-level
``folder``). Unknown keys and wrong types are errors naming the key and suggesting the closest
valid one; cluster keys (``nodes``, ``tasks_per_node``, ...) are accepted and reported as
ignored, because resources belong to the launcher.

Our own sections (``logging``, ``checkpointing``, ``distributed``) and extra keys (marked
"harness" in docs/configuration.md's table) cover what the seed lacks; every default is a sensible one.
"""

from harness.config.arguments import argument_parser, config_from_args, log_config_notes
from harness.config.loading import config_from_dict, load_config, parse_overrides, save_config, to_dict
from harness.config.rules import validate
from harness.config.schema import (
    CHOICES,
    CLUSTER_KEYS,
    CheckpointingConfig,
    Config,
    ConfigError,
    DataAugConfig,
    DataConfig,
    DistributedConfig,
    LoggingConfig,
    MetaConfig,
    ModelConfig,
    OptimizationConfig,
    ShardsConfig,
    WandbConfig,
)
from harness.config.table import config_table, field_docs

__all__ = [
    "CHOICES", "CLUSTER_KEYS", "CheckpointingConfig", "Config", "ConfigError", "DataAugConfig", "DataConfig",
    "DistributedConfig", "LoggingConfig", "MetaConfig", "ModelConfig", "OptimizationConfig", "ShardsConfig",
    "WandbConfig", "argument_parser", "config_from_args", "config_from_dict", "config_table", "field_docs",
    "log_config_notes",
    "load_config", "parse_overrides", "save_config", "to_dict", "validate",
]  # fmt: skip
