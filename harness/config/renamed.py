"""Keys that moved, still read from files and overrides written for their old names.

The flat ``distributed`` keys of each strategy (``distributed.fsdp_cpu_offload``) became keys of
the strategy's own section (``distributed.fsdp.cpu_offload``); the registry lists them
(:data:`harness.parallel.registry.RENAMED_KEYS`). Each layer (the YAML file, then the overrides) is
mapped on its own before the layers merge, so a later layer wins whichever name it uses; one layer
giving a key under both names is an error.
"""

from __future__ import annotations

from typing import Any

from harness.config.schema import ConfigError
from harness.parallel.registry import RENAMED_KEYS


def move_renamed_keys(layer: dict[str, Any], notes: list[str]) -> None:
    """Move each old key of ``layer`` (a nested dict) to its new place, adding one ``warning:``
    deprecation line per old key to ``notes``."""
    section = layer.get("distributed")
    if not isinstance(section, dict):
        return
    for old, new in RENAMED_KEYS.items():
        if old not in section:
            continue
        *parents, name = new.split(".")
        node = section
        for part in parents:
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
            if not isinstance(node, dict):
                raise ConfigError(f"distributed.{part}: expected a mapping, got {node!r}")
        if name in node:
            raise ConfigError(
                f"distributed.{old} and distributed.{new} are both set: keep distributed.{new} "
                f"(distributed.{old} is its deprecated name)"
            )
        node[name] = section.pop(old)
        note = f"warning: distributed.{old} is deprecated; use distributed.{new}"
        if note not in notes:
            notes.append(note)
