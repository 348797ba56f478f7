"""From YAML and ``section.key=value`` overrides to a validated :class:`Config`, and back."""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from harness.config import vjepa2_eval
from harness.config.schema import CHOICES, CLUSTER_KEYS, RANGES, Config, ConfigError
from harness.core.fileio import write_atomic


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


def validate(config: Config) -> Config:
    """Cross-field checks: conflicting options are errors that name both keys."""
    # Here, not at the top: the sampling module imports numpy, which every --help would then pay.
    from harness.data.sampling import ClipSpec, ClipSpecError

    data = config.data
    try:  # the step rule lives in ClipSpec; frames per clip are checked per dataset below
        ClipSpec(1, frame_step=data.frame_step, fps=data.fps, duration=data.duration)
        ClipSpec(1, frame_step=data.val_frame_step, fps=data.val_fps, duration=data.val_duration)
    except ClipSpecError as error:
        raise ConfigError(f"data: {error}") from None
    if data.val_datasets_weights is not None and len(data.val_datasets_weights) != len(data.val_datasets):
        count = len(data.val_datasets_weights)
        raise ConfigError(
            f"data.val_datasets_weights has {count} entries for {len(data.val_datasets)} data.val_datasets"
        )
    if data.datasets_weights is not None and len(data.datasets_weights) != len(data.datasets):
        raise ConfigError(
            f"data.datasets_weights has {len(data.datasets_weights)} entries for {len(data.datasets)} data.datasets"
        )
    for listing_key, fpc_key in (("datasets", "dataset_fpcs"), ("val_datasets", "val_dataset_fpcs")):
        listings, fpcs = getattr(data, listing_key), getattr(data, fpc_key)
        if listings and len(fpcs) not in (1, len(listings)):
            raise ConfigError(f"data.{fpc_key} has {len(fpcs)} entries for {len(listings)} data.{listing_key}")
        if len(set(fpcs)) > 1:
            raise ConfigError(
                f"data.{fpc_key}: {fpcs} differ; the clips of one batch are stacked, so every listing needs the "
                "same frames per clip"
            )
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
    for key, interval in RANGES.items():
        _check_range(config, key, interval)
    _check_shapes(config)
    _check_model_family(config)
    if len(opt.heads) > 1 and config.meta.finetune_encoder:
        raise ConfigError(
            f"optimization.heads has {len(opt.heads)} heads: several heads share one frozen-encoder pass, "
            "so they need meta.finetune_encoder=false"
        )
    for listings, shards in (("datasets", "shards"), ("val_datasets", "val_shards")):
        if getattr(data, listings) and getattr(data, shards):
            raise ConfigError(f"data.{listings} and data.{shards} are both set: choose listings or shards")
    if data.shards_weights is not None and len(data.shards_weights) != len(data.shards):
        count = len(data.shards_weights)
        raise ConfigError(f"data.shards_weights has {count} entries for {len(data.shards)} data.shards")
    for key in ("datasets_weights", "shards_weights"):
        weights = getattr(data, key)
        if weights and not any(weights):  # None or [] mean unweighted
            raise ConfigError(f"data.{key}: {weights} are all 0, so nothing could be drawn; give one a weight > 0")
    if data.shards and data.repeated_aug > 1:
        raise ConfigError("data.repeated_aug > 1 works with listings, not with data.shards")
    if data.repeated_aug > 1 and data.datasets_weights is not None:
        raise ConfigError("data.repeated_aug > 1 cannot be combined with data.datasets_weights")
    _check_class_balance(config)
    _check_encoder_batch(config)
    side = data.decode_max_short_side
    if side != "auto" and not (isinstance(side, int) and side >= 0):
        raise ConfigError(f"data.decode_max_short_side: {side!r} is neither 'auto', 0 (full size) nor a size in pixels")
    return config


def _check_class_balance(config: Config) -> None:
    data, weights = config.data, config.optimization.class_weights
    if data.class_balanced_sampling > 0:
        if data.shards:
            raise ConfigError(
                "data.class_balanced_sampling draws from listings (data.datasets); shards "
                "stream in order: balance them when writing them, or use optimization.class_weights"
            )
        if data.repeated_aug > 1:
            raise ConfigError("data.class_balanced_sampling cannot be combined with data.repeated_aug > 1")
    if isinstance(weights, str) and weights != "auto":
        raise ConfigError(f"optimization.class_weights: {weights!r} is neither 'auto' nor a list of weights")
    if isinstance(weights, list) and (not weights or any(not w >= 0 for w in weights) or not any(weights)):
        raise ConfigError(f"optimization.class_weights: {weights} must be >= 0, one per class, not all 0")


def _check_encoder_batch(config: Config) -> None:
    data, accumulation = config.data, config.optimization.accumulation_steps
    size = data.encoder_batch_size
    if not size or size == data.batch_size:
        return
    if config.meta.finetune_encoder:
        raise ConfigError(
            f"data.encoder_batch_size={size} needs meta.finetune_encoder=false: only a frozen encoder can run "
            "once over several micro-batches (a trained one keeps each micro-batch's activations)"
        )
    group, rest = divmod(size, data.batch_size)
    if rest or accumulation % group:
        raise ConfigError(
            f"data.encoder_batch_size={size} must be data.batch_size ({data.batch_size}) times a divisor of "
            f"optimization.accumulation_steps ({accumulation}): the encoder runs over whole micro-batches of a step"
        )


def lookup(config: Config, key: str) -> Any:
    value: Any = config
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _check_range(config: Config, key: str, interval: str) -> None:
    """``key``'s value (each entry of a list; each head of ``heads[]``) lies in ``interval``."""
    section, _, name = key.partition("[].")
    if name:  # a key of every entry of a list of sub-sections
        for index, item in enumerate(lookup(config, section)):
            _check_value(f"{section}[{index}].{name}", getattr(item, name), interval)
        return
    value = lookup(config, key)
    for item in value if isinstance(value, list) else [value]:
        _check_value(key, item, interval)


def _check_value(key: str, value: Any, interval: str) -> None:
    if value is None or isinstance(value, bool):
        return
    low, high = (float(bound) for bound in interval[1:-1].split(","))
    above = value > low if interval[0] == "(" else value >= low
    below = value < high if interval[-1] == ")" else value <= high
    if not (math.isfinite(value) and above and below):
        raise ConfigError(f"{key} must be in {interval}, got {value!r}")


def _check_shapes(config: Config) -> None:
    """Options the model would reject later: the crop must tile into patches, clips into tubelets."""
    data = config.data
    if data.crop_size % data.patch_size:
        raise ConfigError(f"data.crop_size={data.crop_size} is not a multiple of data.patch_size={data.patch_size}")
    for key in ("dataset_fpcs", "val_dataset_fpcs"):
        odd = [frames for frames in getattr(data, key) if frames % data.tubelet_size]
        if odd:
            raise ConfigError(
                f"data.{key}: {odd[0]} frames per clip is not a multiple of data.tubelet_size={data.tubelet_size}"
            )
    scale = config.data_aug.random_resize_scale
    ratio = config.data_aug.random_resize_aspect_ratio
    for key, pair in (("random_resize_scale", scale), ("random_resize_aspect_ratio", ratio)):
        if len(pair) != 2 or pair[0] > pair[1]:
            raise ConfigError(f"data_aug.{key} must be [low, high] with low <= high, got {pair}")
    if len(config.optimization.betas) != 2:
        raise ConfigError(f"optimization.betas must be [beta1, beta2], got {config.optimization.betas}")
    folder = Path(config.folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"folder: {folder} exists and is not a folder; choose another run folder")


def _check_model_family(config: Config) -> None:
    """``model_name`` is registered, ``family`` agrees with it, ``options`` are the family's, and
    another family's top-level options keep their defaults."""
    from harness.models.family import FAMILIES, FamilyError, family_of

    model = config.model
    try:
        family = family_of(model.model_name)
    except FamilyError as error:
        raise ConfigError(f"model.model_name: {error}") from None
    try:
        family.option_values(model.options)
    except FamilyError as error:  # names model.options.<key> itself
        raise ConfigError(str(error)) from None
    if model.family not in ("auto", family.name):
        raise ConfigError(f"model.family={model.family!r} but model.model_name={model.model_name!r} is of the "
                          f"{family.name} family (families: {', '.join(sorted(FAMILIES))})")  # fmt: skip
    defaults = type(model)()
    for other in FAMILIES.values():
        for key in set(other.top_level_options) - set(family.top_level_options):
            if getattr(model, key) != getattr(defaults, key):
                raise ConfigError(f"model.{key} is an option of the {other.name} family; model.model_name="
                                  f"{model.model_name!r} is of the {family.name} family: remove it or set "
                                  f"model.{key}={getattr(defaults, key)}")  # fmt: skip


SAMPLING_KEYS = ("fps", "duration", "frame_step")  # V-JEPA 2's priority when several are set


def _resolve_sampling(data: dict[str, Any], notes: list[str]) -> None:
    """Keep one of fps > duration > frame_step for training and for validation (the seed app's
    rule), naming what was set aside; validation defaults to the training's choice."""
    for prefix, name in (("", "training"), ("val_", "validation")):
        given = [k for k in SAMPLING_KEYS if data.get(prefix + k) is not None]
        if len(given) > 1:
            dropped = ", ".join(f"data.{prefix}{k}={data[prefix + k]!r}" for k in given[1:])
            notes.append(
                f"warning: several {name} sampling options set; using data.{prefix}{given[0]}="
                f"{data[prefix + given[0]]!r} (V-JEPA 2's order fps > duration > frame_step), ignoring {dropped}"
            )
        if given:
            for key in SAMPLING_KEYS:
                data[prefix + key] = data[prefix + key] if key == given[0] else None
        elif not prefix:
            data.update(fps=None, duration=None, frame_step=4)  # the seed's default step
        else:
            for key in SAMPLING_KEYS:
                data[prefix + key] = data[key]


def _origin(values: dict[str, Any]) -> str:
    if vjepa2_eval.is_eval_layout(values):
        return "vjepa2_eval"
    return "vjepa2_app" if "app" in values else "harness"


def _split_overrides(overrides: list[str], eval_layout: bool) -> tuple[list[str], list[str]]:
    """Overrides in the file's own (V-JEPA 2 eval) layout apply before translation; ours after."""
    if not eval_layout:
        return [], overrides
    roots = (*vjepa2_eval.EVAL_SECTIONS, *vjepa2_eval.EVAL_TOP_KEYS, *vjepa2_eval.LAUNCHER_KEYS)
    before = [item for item in overrides if item.split(".", 1)[0].split("=", 1)[0] in roots]
    return before, [item for item in overrides if item not in before]


def _resolve_auto(values: dict[str, Any], origin: str, notes: list[str]) -> None:
    data, model = values.setdefault("data", {}), values.setdefault("model", {})
    if data.get("sampling_rule", "auto") == "auto":
        data["sampling_rule"] = "harness" if origin == "harness" else "vjepa2"
        notes.append(f"data.sampling_rule: auto -> {data['sampling_rule']}")
    if model.get("clip_aggregation", "auto") == "auto":
        model["clip_aggregation"] = "concat_tokens" if origin == "vjepa2_eval" else "average_logits"
        notes.append(f"model.clip_aggregation: auto -> {model['clip_aggregation']}")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults <- YAML file <- overrides, then :func:`validate`.

    A V-JEPA 2 evaluation file is first translated (:mod:`harness.config.vjepa2_eval`); every
    translation and every choice made for the user is recorded in ``config.notes``.
    """
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
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
    origin = _origin(values)
    notes: list[str] = []
    ignored: list[str] = []
    before, after = _split_overrides(overrides or [], origin == "vjepa2_eval")
    _deep_update(values, parse_overrides(before))
    if origin == "vjepa2_eval":
        values, notes, ignored = vjepa2_eval.translate(values, str(path))
    _deep_update(values, parse_overrides(after))
    data = values.setdefault("data", {})
    if not isinstance(data, dict):
        raise ConfigError(f"data: expected a mapping, got {data!r}")
    _resolve_sampling(data, notes)
    _resolve_auto(values, origin, notes)
    config = _build(Config, values, "", ignored)
    config.ignored = ignored
    config.notes = notes
    return validate(config)


def config_from_dict(values: dict[str, Any]) -> Config:
    """A validated :class:`Config` from a nested dict (e.g. one saved in a checkpoint)."""
    ignored: list[str] = []
    values = copy.deepcopy(values)
    _resolve_auto(values, "harness", [])
    config = _build(Config, values, "", ignored)
    config.ignored = ignored
    return validate(config)


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
