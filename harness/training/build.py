"""From a :class:`~harness.config.Config` to the parts the trainer composes.

This is the only place where the config tree meets the data and model packages, which take
plain arguments. Each ``build_*`` function does one thing and can be called on its own.
"""

from __future__ import annotations

import logging
from pathlib import Path

from harness.config import Config, ConfigError
from harness.data import ClipSpec, EvalTransform, TrainTransform, VideoClipDataset, build_loader, read_listing
from harness.data.listing import VideoRecord
from harness.data.loader import ClipLoader
from harness.models import AttentiveClassifier, VideoClassifier, create_encoder, load_encoder
from harness.models.registry import ENCODER_SIZES
from harness.parallel.activation_checkpoint import apply_activation_checkpointing
from harness.parallel.strategy import Strategy, build_strategy

log = logging.getLogger(__name__)


def build_strategy_from_config(config: Config) -> Strategy:
    """Device, precision and strategy for this process (joins the process group when distributed)."""
    dist_cfg = config.distributed
    options: dict = {}
    if dist_cfg.strategy == "fsdp":
        options = {
            "reshard_after_forward": dist_cfg.fsdp_reshard_after_forward,
            "cpu_offload": dist_cfg.fsdp_cpu_offload,
            "reduce_dtype": dist_cfg.fsdp_reduce_dtype,
        }
    elif dist_cfg.strategy == "deepspeed":
        options = {
            "config": dist_cfg.deepspeed_config,
            "micro_batch": config.data.batch_size,
            "accumulation": config.optimization.accumulation_steps,
            "clip_grad": config.optimization.clip_grad,
        }
    return build_strategy(dist_cfg.strategy, config.meta.device, config.meta.dtype, dist_cfg.backend, options)


def ensure_demo_data(config: Config) -> None:
    """With ``data.generate_demo_data``, write the synthetic demo videos where the listings
    point (``<folder>/train.csv`` and ``<folder>/val.csv``) if they are missing."""
    if not config.data.generate_demo_data:
        return
    listings = [Path(p) for p in config.data.datasets + config.data.val_datasets]
    if all(p.is_file() for p in listings):
        return
    roots = {p.parent for p in listings}
    names = {p.name for p in listings}
    if len(roots) != 1 or not names <= {"train.csv", "val.csv"}:
        raise ConfigError(
            "data.generate_demo_data needs data.datasets/val_datasets to be <folder>/train.csv and "
            f"<folder>/val.csv, got {[str(p) for p in listings]}"
        )
    from harness.data.synthetic import make_demo_dataset

    root = roots.pop()
    log.info("generating the synthetic demo dataset in %s", root)
    make_demo_dataset(root, seed=config.meta.seed)


def _read_listings(paths: list[str], key: str) -> list[list[VideoRecord]]:
    if not paths:
        raise ConfigError(f"data.{key} is empty: give at least one listing (CSV 'path label' or NPY)")
    return [read_listing(path) for path in paths]


def _clip_specs(config: Config, frames_per_clip: list[int], count: int) -> list[ClipSpec]:
    data = config.data
    per_listing = frames_per_clip if len(frames_per_clip) == count else frames_per_clip * count
    return [ClipSpec(fpc, frame_step=data.frame_step, fps=data.fps, duration=data.duration) for fpc in per_listing]


def build_train_dataset(config: Config) -> VideoClipDataset:
    """Training dataset over ``data.datasets`` with the ``data_aug`` augmentation."""
    data, aug = config.data, config.data_aug
    records = _read_listings(data.datasets, "datasets")
    specs = _clip_specs(config, data.dataset_fpcs, len(records))
    transform = TrainTransform(
        data.crop_size,
        aug.random_resize_scale,
        aug.random_resize_aspect_ratio,
        horizontal_flip=aug.horizontal_flip,
        motion_shift=aug.motion_shift,
        auto_augment=aug.auto_augment,
        reprob=aug.reprob,
        normalize=aug.reprob > 0,  # uint8 clips, normalised on the device, unless erasing needs floats
    )
    return VideoClipDataset(
        list(zip(records, specs)),
        transform,
        num_clips=data.num_clips,
        train=True,
        random_clip_sampling=data.random_clip_sampling,
        allow_clip_overlap=data.allow_clip_overlap,
        decoder=data.decoder,
        seed=config.meta.seed,
        max_failure_fraction=data.max_failure_fraction,
        min_frames=data.min_frames,
    )


def build_val_dataset(config: Config) -> VideoClipDataset | None:
    """Deterministic multi-view validation dataset over ``data.val_datasets`` (None if empty)."""
    data = config.data
    if not data.val_datasets:
        return None
    records = _read_listings(data.val_datasets, "val_datasets")
    specs = _clip_specs(config, data.val_dataset_fpcs, len(records))
    return VideoClipDataset(
        list(zip(records, specs)),
        EvalTransform(data.crop_size, num_views=data.num_views, normalize=False),
        num_clips=data.val_num_clips,
        train=False,
        allow_clip_overlap=data.allow_clip_overlap,
        decoder=data.decoder,
        max_failure_fraction=data.max_failure_fraction,
    )


def infer_num_classes(config: Config, dataset: VideoClipDataset) -> int:
    """``meta.num_classes``, or 1 + the largest training label when it is 0."""
    largest = max(record.label for record in dataset.records)
    if config.meta.num_classes:
        if largest >= config.meta.num_classes:
            raise ConfigError(
                f"meta.num_classes={config.meta.num_classes} but the training listing has label {largest}"
            )
        return config.meta.num_classes
    return largest + 1


def build_loaders(
    config: Config, strategy: Strategy, train_set: VideoClipDataset, val_set: VideoClipDataset | None
) -> tuple[ClipLoader, ClipLoader | None]:
    """Per-rank loaders; a training epoch has ``ipe * accumulation_steps`` batches when ``ipe`` is set."""
    data, opt = config.data, config.optimization
    samples = None
    if opt.ipe is not None:
        samples = opt.ipe * opt.accumulation_steps * data.batch_size * strategy.world_size
    train_loader = build_loader(
        train_set,
        data.batch_size,
        train=True,
        seed=config.meta.seed,
        source_weights=data.datasets_weights,
        num_samples_per_epoch=samples,
        repeats=data.repeated_aug,
        **_loader_options(config, strategy),
    )
    return train_loader, build_val_loader(config, strategy, val_set) if val_set is not None else None


def build_val_loader(config: Config, strategy: Strategy, val_set: VideoClipDataset) -> ClipLoader:
    """This rank's exact share of the validation set (no padding), in a fixed order."""
    batch_size = config.data.val_batch_size or config.data.batch_size
    return build_loader(val_set, batch_size, train=False, **_loader_options(config, strategy))


def _loader_options(config: Config, strategy: Strategy) -> dict:
    return {
        "rank": strategy.rank,
        "world_size": strategy.world_size,
        "num_workers": config.data.num_workers,
        "pin_memory": config.data.pin_mem and strategy.device.type == "cuda",
    }


def build_model(config: Config, num_classes: int) -> VideoClassifier:
    """Encoder (pretrained weights loaded first) + attentive classifier, on the CPU.

    Activation checkpointing is applied here from outside the model; compile and distributed
    wrapping come after (the strategy's ``prepare``).
    """
    model_cfg, data, meta = config.model, config.data, config.meta
    if model_cfg.model_name not in ENCODER_SIZES:
        raise ConfigError(f"model.model_name: unknown encoder {model_cfg.model_name!r}; known: {sorted(ENCODER_SIZES)}")
    overrides = {
        "img_size": data.crop_size,
        "num_frames": max(data.dataset_fpcs),
        "patch_size": data.patch_size,
        "tubelet_size": data.tubelet_size,
        "uniform_power": model_cfg.uniform_power,
        "use_silu": model_cfg.use_silu,
        "wide_silu": model_cfg.wide_silu,
        "use_sdpa": meta.use_sdpa,
        "drop_path_rate": model_cfg.drop_path_rate,
    }
    if model_cfg.depth is not None:
        overrides["depth"] = model_cfg.depth
    if model_cfg.use_rope:  # a *_rope name already implies it; False must not switch it off
        overrides["use_rope"] = True
    encoder = create_encoder(model_cfg.model_name, **overrides)
    if meta.load_encoder and meta.pretrain_checkpoint:
        report = load_encoder(encoder, meta.pretrain_checkpoint)
        log.info("encoder: %s", report.summary())
    elif meta.load_encoder and not meta.finetune_encoder:
        log.warning("meta.pretrain_checkpoint is not set: the frozen encoder keeps its random initialisation")
    classifier = AttentiveClassifier(
        encoder.embed_dim,
        num_classes,
        num_heads=model_cfg.attn_pooler_heads or encoder.num_heads,
        depth=model_cfg.attn_pooler_depth,
        use_sdpa=meta.use_sdpa,
        order=model_cfg.pooler_order,
    )
    if model_cfg.use_activation_checkpointing and meta.finetune_encoder:
        apply_activation_checkpointing(encoder.blocks, model_cfg.activation_checkpointing_every)
    model = VideoClassifier(encoder, classifier, freeze_encoder=not meta.finetune_encoder)
    if model_cfg.compile_model:
        # Per block and in place (torchtitan's way): names and checkpoints stay the same, and the
        # compiled blocks are the units that FSDP2 shards afterwards.
        for block in encoder.blocks:
            block.compile()
    return model
