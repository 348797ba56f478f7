"""From YAML and ``section.key=value`` overrides to a validated :class:`Config`, and back.

Typed building (unknown keys and wrong types are errors naming the key) lives here; the decisions
made for the user are :mod:`harness.config.auto`, the renamed keys :mod:`harness.config.renamed`,
the cross-field rules :mod:`harness.config.rules`.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from harness.config import vjepa2_eval
from harness.config.auto import file_origin, resolve_auto, resolve_sampling, split_overrides
from harness.config.renamed import move_renamed_keys
from harness.config.rules import validate
from harness.config.schema import CLUSTER_KEYS, Config, ConfigError
from harness.core.fileio import write_atomic

__all__ = ["config_from_dict", "load_config", "parse_overrides", "save_config", "to_dict", "validate"]


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
        inner = [t for t in options if t is not type(None)]
        for hint in inner[:-1]:  # the first type the value fits (list[float] | str: [1, 2] or "auto")
            try:
                return _coerce(value, hint, where)
            except ConfigError:
                pass
        if len(inner) > 1 and typing.get_origin(inner[-1]) is list and not isinstance(value, (list, tuple)):
            # (int | list[int]: a scalar that is no int fits neither; not "crop_size[0]: expected int")
            names = " or ".join(f"a list of {typing.get_args(t)[0].__name__}" if typing.get_origin(t) is list
                                else getattr(t, "__name__", str(t)) for t in inner)  # fmt: skip
            raise ConfigError(f"{where}: expected {names}, got {value!r}")
        return _coerce(value, inner[-1], where)
    if hint is dict or origin is dict:
        if isinstance(value, dict):
            return dict(value)
        raise ConfigError(f"{where}: expected a mapping, got {value!r}")
    if origin is list:
        (inner,) = typing.get_args(hint)
        items = value if isinstance(value, (list, tuple)) else [value]
        if dataclasses.is_dataclass(inner):
            return [_build(inner, item, f"{where}[{i}].", []) for i, item in enumerate(items)]
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
        _merge(tree, key.split("."), _override_value(key, raw))
    return tree


def _override_value(key: str, raw: str) -> Any:
    """An override's value as YAML; a list whose items YAML cannot read (brace patterns such as
    ``[shards/train-{000..009}.tar]``, where YAML sees a mapping) is split on its top-level commas."""
    if not raw:
        return None
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as error:
        if raw.startswith("[") and raw.endswith("]"):
            return _split_top_level(raw[1:-1])
        raise ConfigError(f"override {key}: {raw!r} is not a YAML value ({getattr(error, 'problem', error)})") from None


def _split_top_level(text: str) -> list[str]:
    items, depth, current = [], 0, ""
    for char in text:
        depth += {"{": 1, "}": -1}.get(char, 0)
        if char == "," and depth == 0:
            items.append(current.strip())
            current = ""
        else:
            current += char
    items.append(current.strip())
    return [item for item in items if item]


def _deep_update(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = value
    return base


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults <- YAML file <- overrides, then :func:`~harness.config.rules.validate`.

    A V-JEPA 2 evaluation file is first translated (:mod:`harness.config.vjepa2_eval`); every
    translation, every choice made for the user and every deprecated key name is recorded in
    ``config.notes``.
    """
    values = _read_yaml(Path(path)) if path is not None else {}
    origin = file_origin(values)
    notes: list[str] = []
    renamed: list[str] = []  # deprecation lines, kept apart: a translation replaces ``notes``
    ignored: list[str] = []
    move_renamed_keys(values, renamed)
    before, after = split_overrides(overrides or [], origin == "vjepa2_eval")
    _deep_update(values, parse_overrides(before))
    if origin == "vjepa2_eval":
        values, notes, ignored = vjepa2_eval.translate(values, str(path))
    layer = parse_overrides(after)
    move_renamed_keys(layer, renamed)
    _deep_update(values, layer)
    data = values.setdefault("data", {})
    if not isinstance(data, dict):
        raise ConfigError(f"data: expected a mapping, got {data!r}")
    resolve_sampling(data, notes)
    resolve_auto(values, origin, notes)
    config = _build(Config, values, "", ignored)
    config.ignored = ignored
    config.notes = notes + renamed
    return validate(config)


def _read_yaml(path: Path) -> dict[str, Any]:
    """The mapping in the YAML file ``path`` (every problem a one-line :class:`ConfigError`)."""
    if path.is_dir():
        inside = path / "config.yaml"
        hint = f" (e.g. {inside})" if inside.is_file() else ""
        raise ConfigError(f"config file {path} is a folder; give its YAML file{hint}")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path, encoding="utf-8") as handle:
            values = yaml.safe_load(handle) or {}
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (byte {error.start}); save it as UTF-8") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML ({getattr(error, 'problem', error)})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return values


def config_from_dict(values: dict[str, Any]) -> Config:
    """A validated :class:`Config` from a nested dict (e.g. one saved in a checkpoint)."""
    ignored: list[str] = []
    values = copy.deepcopy(values)
    move_renamed_keys(values, [])  # a config saved by an older version: its flat strategy keys, silently
    resolve_auto(values, "harness", [])
    config = _build(Config, values, "", ignored)
    config.ignored = ignored
    return validate(config)


def apply_overrides(config: Config, overrides: list[str]) -> Config:
    """``config`` with ``section.key=value`` overrides applied, validated again."""
    return config_from_dict(_deep_update(to_dict(config), parse_overrides(overrides)))


def to_dict(config: Config) -> dict[str, Any]:
    """Plain nested dict (for writing the resolved config into the run folder)."""
    out = dataclasses.asdict(config)
    out.pop("ignored", None)
    out.pop("notes", None)
    return out


def save_config(config: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically: a crash never leaves half a file), headed
    by comments saying what each translated key became and which keys were ignored."""
    header = [f"# {note}" for note in config.notes] + [f"# ignored: {key}" for key in config.ignored]
    text = "".join(f"{line}\n" for line in header) + yaml.safe_dump(to_dict(config), sort_keys=False)
    write_atomic(path, lambda handle: handle.write(text.encode("utf-8")))
