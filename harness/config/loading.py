"""From YAML and ``section.key=value`` overrides to a validated :class:`Config`, and back."""

from __future__ import annotations

import copy
import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from harness.config.schema import CHOICES, CLUSTER_KEYS, Config, ConfigError
from harness.data.sampling import ClipSpec, ClipSpecError
from harness.fileio import write_atomic


def _suggest(key: str, options: list[str]) -> str:
    close = difflib.get_close_matches(key, options, n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(sorted(options))}"


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check/convert ``value`` to the type ``hint`` (int, float, bool, str, lists, Optional)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        (inner,) = [t for t in options if t is not type(None)]
        return _coerce(value, inner, where)
    if origin is list:
        (inner,) = typing.get_args(hint)
        items = value if isinstance(value, (list, tuple)) else [value]
        return [_coerce(item, inner, f"{where}[{i}]") for i, item in enumerate(items)]
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads "1e-4" as a string
            except ValueError:
                pass
    elif hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    raise ConfigError(f"{where}: expected {getattr(hint, '__name__', hint)}, got {value!r}")


def _build(cls: type, values: dict[str, Any], prefix: str, ignored: list[str]) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    kwargs = {}
    for key, value in values.items():
        where = f"{prefix}{key}"
        if key not in fields:
            if not prefix and key in CLUSTER_KEYS:
                ignored.append(key)
                continue
            raise ConfigError(f"unknown key {where!r}{_suggest(key, list(fields))}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value or {}, f"{where}.", ignored)
        else:
            kwargs[key] = _coerce(value, hint, where)
    return cls(**kwargs)


def _merge(base: dict[str, Any], path: list[str], value: Any) -> None:
    node = base
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {'.'.join(path)}: {part!r} is not a section")
    node[path[-1]] = value


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``["optimization.lr=1e-4", "data.batch_size=8"]`` -> nested dict (values parsed as YAML)."""
    tree: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        _merge(tree, key.split("."), yaml.safe_load(raw) if raw else None)
    return tree


def _deep_update(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = value
    return base


def validate(config: Config) -> Config:
    """Cross-field checks: conflicting options are errors that name both keys."""
    data = config.data
    try:  # the step rule lives in ClipSpec; frames per clip are checked per dataset below
        ClipSpec(1, frame_step=data.frame_step, fps=data.fps, duration=data.duration)
    except ClipSpecError as error:
        raise ConfigError(f"data: {error}") from None
    if data.datasets_weights is not None and len(data.datasets_weights) != len(data.datasets):
        raise ConfigError(
            f"data.datasets_weights has {len(data.datasets_weights)} entries for {len(data.datasets)} data.datasets"
        )
    for listing_key, fpc_key in (("datasets", "dataset_fpcs"), ("val_datasets", "val_dataset_fpcs")):
        listings, fpcs = getattr(data, listing_key), getattr(data, fpc_key)
        if listings and len(fpcs) not in (1, len(listings)):
            raise ConfigError(f"data.{fpc_key} has {len(fpcs)} entries for {len(listings)} data.{listing_key}")
    for key, options in CHOICES.items():
        value = lookup(config, key)
        if value not in options:
            close = difflib.get_close_matches(str(value), options, n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(options)}{hint}")
    opt = config.optimization
    if opt.warmup + opt.anneal > opt.epochs:
        raise ConfigError(
            f"optimization.warmup ({opt.warmup}) + optimization.anneal ({opt.anneal}) exceed epochs ({opt.epochs})"
        )
    _check_positive(
        config,
        ("data.batch_size", "data.num_clips", "data.val_num_clips", "data.num_views", "data.repeated_aug"),
        ("optimization.epochs", "optimization.accumulation_steps", "logging.log_every"),
        ("model.activation_checkpointing_every", "shards.interleave", "optimization.max_nonfinite_steps"),
    )
    if opt.ipe is not None and opt.ipe < 1:
        raise ConfigError(f"optimization.ipe must be >= 1 (or null for the loader length), got {opt.ipe}")
    if opt.layer_decay is not None and not 0 < opt.layer_decay <= 1:
        raise ConfigError(f"optimization.layer_decay must be in (0, 1], got {opt.layer_decay}")
    if not 0 <= opt.ema_decay < 1:
        raise ConfigError(f"optimization.ema_decay must be in [0, 1), got {opt.ema_decay}")
    for listings, shards in (("datasets", "shards"), ("val_datasets", "val_shards")):
        if getattr(data, listings) and getattr(data, shards):
            raise ConfigError(f"data.{listings} and data.{shards} are both set: choose listings or shards")
    if data.shards_weights is not None and len(data.shards_weights) != len(data.shards):
        count = len(data.shards_weights)
        raise ConfigError(f"data.shards_weights has {count} entries for {len(data.shards)} data.shards")
    if data.shards and data.repeated_aug > 1:
        raise ConfigError("data.repeated_aug > 1 works with listings, not with data.shards")
    if data.repeated_aug > 1 and data.datasets_weights is not None:
        raise ConfigError("data.repeated_aug > 1 cannot be combined with data.datasets_weights")
    return config


def lookup(config: Config, key: str) -> Any:
    value: Any = config
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _check_positive(config: Config, *groups: tuple[str, ...]) -> None:
    for key in (k for group in groups for k in group):
        value = lookup(config, key)
        if value < 1:
            raise ConfigError(f"{key} must be >= 1, got {value}")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults <- YAML file <- overrides, then :func:`validate`."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        with open(path, encoding="utf-8") as handle:
            values = yaml.safe_load(handle) or {}
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
    _deep_update(values, parse_overrides(overrides or []))
    data = values.get("data")
    if (
        isinstance(data, dict)
        and "frame_step" not in data
        and any(data.get(k) is not None for k in ("fps", "duration"))
    ):
        data["frame_step"] = None  # the default step gives way to an explicit fps/duration
    ignored: list[str] = []
    config = _build(Config, values, "", ignored)
    config.ignored = ignored
    return validate(config)


def config_from_dict(values: dict[str, Any]) -> Config:
    """A validated :class:`Config` from a nested dict (e.g. one saved in a checkpoint)."""
    ignored: list[str] = []
    config = _build(Config, copy.deepcopy(values), "", ignored)
    config.ignored = ignored
    return validate(config)


def to_dict(config: Config) -> dict[str, Any]:
    """Plain nested dict (for writing the resolved config into the run folder)."""
    out = dataclasses.asdict(config)
    out.pop("ignored", None)
    return out


def save_config(config: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically: a crash never leaves half a file)."""
    text = yaml.safe_dump(to_dict(config), sort_keys=False)
    write_atomic(path, lambda handle: handle.write(text.encode("utf-8")))
