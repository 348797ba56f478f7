"""Typed, nested run configuration: defaults <- YAML <- ``section.key=value`` overrides, validated.

The schema is a tree of dataclasses. It accepts V-JEPA 2 video-classifier YAML files as they
are (sections ``data``, ``data_aug``, ``meta``, ``model``, ``optimization`` and top-level
``folder``). Unknown keys and wrong types are errors naming the key and suggesting the closest
valid one; cluster keys (``nodes``, ``tasks_per_node``, ...) are accepted and reported as
ignored, because resources belong to the launcher.

Our own sections (``logging``, ``checkpointing``, ``distributed``) and extra keys (marked
"harness" in the README's table) cover what the seed lacks; every default is a sensible one.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import difflib
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.data.sampling import ClipSpec, ClipSpecError

CLUSTER_KEYS = ("nodes", "tasks_per_node", "cpus_per_task", "mem_per_gpu", "app")
CHOICES = {
    "meta.dtype": ("float32", "bfloat16", "float16"),
    "meta.device": ("auto", "cpu", "cuda"),
    "model.pooler_order": ("tokens_first", "queries"),
    "logging.level": ("debug", "info", "warning"),
    "logging.wandb.mode": ("auto", "online", "offline", "disabled"),
    "distributed.strategy": ("auto", "single", "ddp", "fsdp", "deepspeed"),
    "distributed.backend": ("auto", "nccl", "gloo"),
    "distributed.fsdp_reduce_dtype": ("float32", "bfloat16"),
}


class ConfigError(ValueError):
    """A config problem; the message names the key (``section.key``) and suggests a fix."""


@dataclass
class DataConfig:
    """Datasets and clip sampling (V-JEPA 2 ``data`` section)."""

    datasets: list[str] = field(default_factory=list)  #: training listings (CSV/NPY)
    datasets_weights: list[float] | None = None  #: per-listing sampling weights (mixing)
    dataset_fpcs: list[int] = field(default_factory=lambda: [16])  #: frames per clip, per listing
    val_datasets: list[str] = field(default_factory=list)  #: validation listings
    val_dataset_fpcs: list[int] = field(default_factory=lambda: [16])  #: frames per clip, per val listing
    batch_size: int = 8  #: videos per rank per micro-batch (global batch = batch_size x ranks x accumulation)
    val_batch_size: int | None = None  #: default: batch_size
    crop_size: int = 224  #: output side in pixels
    patch_size: int = 16  #: spatial patch size of the encoder
    tubelet_size: int = 2  #: temporal patch size of the encoder
    frame_step: int | None = 4  #: take every k-th frame (exactly one of frame_step/fps/duration)
    fps: float | None = None  #: target sampling rate in frames per second
    duration: float | None = None  #: seconds a clip spans
    num_clips: int = 1  #: temporal clips per training video
    val_num_clips: int = 1  #: temporal clips per validation video
    num_views: int = 1  #: spatial crops per validation clip
    num_workers: int = 8  #: decoding processes per rank
    pin_mem: bool = True  #: pin host memory (only where a GPU exists)
    decoder: str = "auto"  #: auto, torchcodec, decord or pyav
    allow_clip_overlap: bool = False  #: spread clips over the video when they do not fit a segment
    random_clip_sampling: bool = True  #: random clip position when training
    max_failure_fraction: float = 0.01  #: abort when more videos than this fail to decode
    min_frames: int = 0  #: skip videos with fewer frames
    shards: list[str] = field(default_factory=list)  #: harness: training shard sources (manifest, pattern, pipe:)
    shards_weights: list[float] | None = None  #: harness: per-source sampling weights for data.shards
    val_shards: list[str] = field(default_factory=list)  #: harness: validation shard sources
    repeated_aug: int = 1  #: harness: augmented copies of each drawn video per batch (repeated augmentation)
    generate_demo_data: bool = False  #: harness: write the synthetic demo videos when the listings are missing
    dataset_type: str = "VideoDataset"  #: accepted for V-JEPA 2 files; only videos are supported


@dataclass
class DataAugConfig:
    """Training augmentation (V-JEPA 2 ``data_aug`` section)."""

    auto_augment: bool = False  #: RandAugment per clip
    horizontal_flip: bool = True  #: flip a clip with probability 0.5
    motion_shift: bool = False  #: crop box drifts across the clip
    random_resize_aspect_ratio: list[float] = field(default_factory=lambda: [0.75, 1.35])  #: crop w/h range
    random_resize_scale: list[float] = field(default_factory=lambda: [0.3, 1.0])  #: crop area range
    reprob: float = 0.0  #: random erasing probability


@dataclass
class MetaConfig:
    """Run-level switches (V-JEPA 2 ``meta`` section)."""

    dtype: str = "bfloat16"  #: float32, bfloat16 or float16
    load_checkpoint: bool = True  #: resume from the run folder's latest checkpoint when present
    read_checkpoint: str | None = None  #: explicit checkpoint to resume from
    load_encoder: bool = True  #: load pretrain_checkpoint into the encoder
    pretrain_checkpoint: str | None = None  #: V-JEPA 2 (or harness) encoder weights
    finetune_encoder: bool = False  #: False freezes the encoder (attentive probe)
    num_classes: int = 0  #: classes; 0 = infer from the training listing
    save_every_freq: int = 0  #: keep a copy every N epochs (0: never)
    seed: int = 0  #: global seed
    use_sdpa: bool = True  #: fused attention
    eval_only: bool = False  #: evaluate and stop
    device: str = "auto"  #: harness: auto (the rank's GPU if any, else CPU), cpu or cuda


@dataclass
class ModelConfig:
    """Encoder and classifier (V-JEPA 2 ``model`` section)."""

    model_name: str = "vit_large"  #: registered encoder name
    depth: int | None = None  #: harness: override the registered number of blocks (small experiments)
    compile_model: bool = False  #: torch.compile the encoder
    use_activation_checkpointing: bool = False  #: recompute blocks in backward
    activation_checkpointing_every: int = 1  #: harness: checkpoint every k-th block (1: all)
    uniform_power: bool = False  #: sin-cos channel split
    use_rope: bool = False  #: rotary positions
    use_silu: bool = False  #: SwiGLU MLP
    wide_silu: bool = True  #: SwiGLU width rounding as V-JEPA 2
    attn_pooler_depth: int = 1  #: cross-attention block + (depth - 1) self-attention blocks
    attn_pooler_heads: int | None = None  #: default: the encoder's heads
    drop_path_rate: float = 0.0  #: harness: stochastic depth rate of the last encoder block
    pooler_order: str = "tokens_first"  #: harness: tokens_first (V-JEPA 2 probes) or queries


@dataclass
class OptimizationConfig:
    """Optimizer and schedules (V-JEPA 2 ``optimization`` section). Epoch units unless noted."""

    epochs: int = 20  #: training epochs
    ipe: int | None = None  #: iterations per epoch (default: loader length)
    lr: float = 1e-4  #: peak learning rate
    start_lr: float = 0.0  #: learning rate at step 0 (linear warmup from here)
    final_lr: float = 0.0  #: learning rate at the end of the decay
    warmup: float = 0.0  #: warmup epochs
    anneal: float = 0.0  #: decay epochs at the end (warmup-stable-decay)
    weight_decay: float = 0.05  #: initial weight decay
    final_weight_decay: float = 0.05  #: weight decay at the end (cosine schedule)
    enc_lr_scale: float = 1.0  #: encoder learning-rate multiplier
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  #: AdamW betas
    eps: float = 1e-8  #: AdamW epsilon
    clip_grad: float | None = 1.0  #: harness: gradient-norm clipping (None: off)
    label_smoothing: float = 0.0  #: harness: cross-entropy label smoothing
    accumulation_steps: int = 1  #: harness: micro-batches per optimizer step
    layer_decay: float | None = None  #: harness: layer-wise lr decay over encoder depth (e.g. 0.75)
    ema_decay: float = 0.0  #: harness: EMA of the weights, used for evaluation (0: off)
    mixup: float = 0.0  #: harness: mixup Beta(alpha, alpha) (0: off)
    cutmix: float = 0.0  #: harness: cutmix Beta(alpha, alpha) (0: off)
    mixup_prob: float = 1.0  #: harness: probability that a batch is mixed
    mixup_switch_prob: float = 0.5  #: harness: probability of cutmix when both are on
    max_nonfinite_steps: int = 5  #: harness: stop after this many NaN/Inf-loss steps in a row (each is skipped)


@dataclass
class WandbConfig:
    """Weights & Biases (harness); rank 0 logs. Without an API key or network it runs offline."""

    enabled: bool = False  #: log to W&B
    project: str = "harness"  #: W&B project
    entity: str | None = None  #: W&B team or user (default: yours)
    name: str | None = None  #: run name (default: the run folder's name)
    group: str | None = None  #: run group
    tags: list[str] = field(default_factory=list)  #: run tags
    mode: str = "auto"  #: auto (online with an API key, else offline), online, offline, disabled
    thumbnails: int = 8  #: validation predictions logged with a video thumbnail per epoch


@dataclass
class LoggingConfig:
    """Console, CSV, W&B and progress output (harness)."""

    log_every: int = 10  #: steps per CSV row / console line (losses are averaged over them)
    progress_bar: bool = True  #: tqdm bar on the main process
    level: str = "info"  #: console log level: debug, info, warning
    stall_threshold: float = 0.3  #: warn when more than this share of step time waits for data
    wandb: WandbConfig = field(default_factory=WandbConfig)


@dataclass
class CheckpointingConfig:
    """What is saved when (harness). ``latest`` is written every epoch in any case."""

    every_steps: int = 0  #: also write ``latest`` every N optimizer steps (0: only per epoch)
    save_best: bool = True  #: keep the checkpoint with the best validation top-1 as ``best``
    save_on_signal: bool = True  #: on SIGTERM/SIGUSR1 (SLURM's warning): save ``latest`` and exit cleanly


@dataclass
class ShardsConfig:
    """How shards stream into ranks (harness); the sources are ``data.shards`` / ``data.val_shards``."""

    interleave: int = 4  #: shards each worker reads at once (samples drawn among them at random)
    resample: bool = False  #: draw shards with replacement (allows fewer shards than ranks x workers)
    samples_per_epoch: int | None = None  #: epoch length when the sources have no manifest counts


@dataclass
class DistributedConfig:
    """How the job is spread over processes (harness)."""

    strategy: str = "auto"  #: auto (ddp if several processes, else single), single, ddp, fsdp, deepspeed
    backend: str = "auto"  #: process-group backend: auto (nccl on GPU, gloo on CPU), nccl, gloo
    fsdp_reshard_after_forward: bool = True  #: FSDP2: free gathered weights after forward (less memory)
    fsdp_cpu_offload: bool = False  #: FSDP2: keep sharded weights, grads and optimizer state in host memory
    fsdp_reduce_dtype: str = "float32"  #: FSDP2: gradient reduction dtype (float32 or bfloat16)
    deepspeed_config: str | None = None  #: DeepSpeed JSON (e.g. ds_configs/zero3.json); null: ZeRO-2 defaults


@dataclass
class Config:
    """The whole run. ``folder`` is the run directory (checkpoints, logs, resolved config)."""

    folder: str = "runs/default"  #: run directory: checkpoints, logs, resolved config, predictions
    data: DataConfig = field(default_factory=DataConfig)
    data_aug: DataAugConfig = field(default_factory=DataAugConfig)
    meta: MetaConfig = field(default_factory=MetaConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimization: OptimizationConfig = field(default_factory=OptimizationConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    checkpointing: CheckpointingConfig = field(default_factory=CheckpointingConfig)
    shards: ShardsConfig = field(default_factory=ShardsConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    ignored: list[str] = field(default_factory=list, metadata={"internal": True})


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
        value = _lookup(config, key)
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


def _lookup(config: Config, key: str) -> Any:
    value: Any = config
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _check_positive(config: Config, *groups: tuple[str, ...]) -> None:
    for key in (k for group in groups for k in group):
        value = _lookup(config, key)
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
    """Write the resolved config as YAML."""
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(to_dict(config), handle, sort_keys=False)


def field_docs(cls: type) -> dict[str, str]:
    """Field name -> the ``#:`` comment after it in the class source (the key's documentation)."""
    import inspect
    import re

    docs = {}
    for line in inspect.getsource(cls).splitlines():
        match = re.match(r"\s+(\w+): .*?#: (.*)$", line)
        if match:
            docs[match.group(1)] = match.group(2).strip()
    return docs


def config_table() -> str:
    """Markdown table of every config key with its type, default and meaning (for the README)."""
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    _table_rows(Config, "", lines)
    return "\n".join(lines) + "\n"


def _table_rows(cls: type, prefix: str, lines: list[str]) -> None:
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    for item in dataclasses.fields(cls):
        if item.metadata.get("internal"):
            continue
        hint = hints[item.name]
        if dataclasses.is_dataclass(hint):
            _table_rows(hint, f"{prefix}{item.name}.", lines)
        else:
            lines.append(_table_row(f"{prefix}{item.name}", hint, _default(item), docs.get(item.name, "")))


def _default(item: dataclasses.Field) -> Any:
    if item.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return item.default_factory()  # type: ignore[misc]
    return item.default


def _table_row(key: str, hint: Any, default: Any, doc: str) -> str:
    type_name = str(hint).replace("typing.", "") if not isinstance(hint, type) else hint.__name__
    type_name = type_name.replace(" | None", " or null")
    shown = "null" if default is None else yaml.safe_dump(default, default_flow_style=True).strip().removesuffix("...")
    return f"| `{key}` | {type_name} | `{shown.strip()}` | {doc.replace('|', '/')} |"


def argument_parser(prog: str, description: str | None) -> argparse.ArgumentParser:
    """A command-line parser with ``--config CFG`` and ``section.key=value`` overrides (entry points
    add their own options)."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True, help="YAML config (V-JEPA 2 classifier files work as they are)")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. optimization.lr=1e-4")
    return parser


def config_from_args(args: argparse.Namespace) -> Config | None:
    """The config that ``args.config`` and ``args.overrides`` describe; on a problem, print it
    (naming the key, with a suggestion) and return None, so the entry point exits with code 2."""
    try:
        return load_config(args.config, args.overrides)
    except ConfigError as error:
        print(f"config error: {error}", file=sys.stderr)
        return None


def main(argv: list[str] | None = None) -> int:
    """``python -m harness.config``: the key table; with ``--config`` (and overrides), print one
    resolved key (``--get folder``) or save the resolved config (``--save PATH``)."""
    parser = argparse.ArgumentParser(prog="python -m harness.config", description=main.__doc__)
    parser.add_argument("--config", default=None, help="YAML config to resolve")
    parser.add_argument("--get", default=None, help="print this resolved key (e.g. folder, data.batch_size)")
    parser.add_argument("--save", default=None, help="write the resolved config to this path")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides")
    args = parser.parse_args(argv)
    if args.config is None and not args.overrides:
        print(config_table(), end="")
        return 0
    config = config_from_args(args)
    if config is None:
        return 2
    if args.save:
        save_config(config, args.save)
    if args.get:
        try:
            print(_lookup(config, args.get))
        except AttributeError:
            print(f"config error: unknown key {args.get!r}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
