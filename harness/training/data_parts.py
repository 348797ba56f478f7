"""The data a run reads, from the config: datasets (listings or shards), the number of classes,
the loaders, the synthetic demo data. Part of :mod:`harness.training.assemble`, which composes
these with the model and the strategy.
"""

from __future__ import annotations

import logging
from pathlib import Path

from torch.utils.data import DataLoader

from harness.config import Config, ConfigError
from harness.data import ClipSpec, EvalTransform, TrainTransform, VideoClipDataset
from harness.data.listing import Listing
from harness.data.shard_eval import ShardEvalDataset
from harness.data.shards import (
    Shard,
    ShardDataset,
    ShardError,
    list_shards,
)
from harness.data.source import LoaderSettings, VideoSource
from harness.parallel.distributed import process_info
from harness.parallel.strategy import Strategy
from harness.training.classes import labelled, listing_records

log = logging.getLogger(__name__)


def ensure_demo_data(config: Config) -> None:
    """With ``data.generate_demo_data``, write the synthetic demo videos where the listings
    point (``<folder>/train.csv`` and ``<folder>/val.csv``) if they are missing."""
    if not config.data.generate_demo_data:
        return
    listings = [Path(p) for p in config.data.datasets + config.data.val_datasets]
    class_file = Path(config.data.class_names) if isinstance(config.data.class_names, str) else None
    if all(p.is_file() for p in listings):
        if class_file is not None and not class_file.is_file() and class_file.parent == listings[0].parent:
            from harness.data.synthetic import write_class_names  # demo data made before it had names

            largest = max(int(listing_records(str(p)).all_ids().max()) for p in listings)
            write_class_names(class_file.parent, 1 + largest)
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
    if config.meta.label_sets:
        from harness.data.synthetic import make_label_set_demo

        make_label_set_demo(root, seed=config.meta.seed)
        return
    make_demo_dataset(root, seed=config.meta.seed, multi_label=config.meta.multi_label)


def _read_listings(paths: list[str], key: str, names: list[str] | None) -> list[Listing]:
    if not paths:
        raise ConfigError(f"data.{key} is empty: give at least one listing (CSV 'path label' or NPY)")
    return [labelled(listing_records(path), names, key) for path in paths]


def _clip_specs(config: Config, frames_per_clip: list[int], count: int, validation: bool = False) -> list[ClipSpec]:
    data = config.data
    per_listing = frames_per_clip if len(frames_per_clip) == count else frames_per_clip * count
    prefix = "val_" if validation else ""
    sampling = {key: getattr(data, prefix + key) for key in ("frame_step", "fps", "duration")}
    rule = "harness" if data.sampling_rule == "auto" else data.sampling_rule
    return [ClipSpec(fpc, rule=rule, **sampling) for fpc in per_listing]


def _frame_rates(config: Config, count: int, validation: bool = False) -> list[float | None]:
    """The frame rate of each listing's frame folders (None: unknown): ``data.frame_folder_fps``
    (``val_frame_folder_fps`` for validation, by default the same), one for all or one per listing."""
    data = config.data
    rates = data.val_frame_folder_fps if validation and data.val_frame_folder_fps is not None else data.frame_folder_fps
    per_listing = rates if len(rates) == count else rates[:1] * count
    return [float(rate) if rate else None for rate in per_listing] or [None] * count


def _train_transform(config: Config) -> TrainTransform:
    data, aug = config.data, config.data_aug
    return TrainTransform(
        data.crop_size,
        aug.random_resize_scale,
        aug.random_resize_aspect_ratio,
        horizontal_flip=aug.horizontal_flip,
        motion_shift=aug.motion_shift,
        auto_augment=aug.auto_augment,
        reprob=aug.reprob,
        normalize=aug.reprob > 0,  # uint8 clips, normalised on the device, unless erasing needs floats
    )


def _shard_sources(sources: list[str], key: str) -> list[list[Shard]]:
    # Only the main rank checks that the shards of a pattern exist (a stat per shard on every rank
    # is a metadata storm); elsewhere a missing shard is a broken shard when read.
    check_exists = process_info().rank == 0
    try:
        return [list_shards(source, check_exists) for source in sources]
    except ShardError as error:
        raise ConfigError(f"data.{key}: {error}") from None


def build_train_dataset(config: Config, names: list[str] | None = None) -> VideoSource:
    """Training data: ``data.datasets`` listings (name labels get their ids in ``names``), or
    ``data.shards`` streamed, with ``data_aug``."""
    data = config.data
    if data.shards:
        dataset = ShardDataset(
            _shard_sources(data.shards, "shards"),
            _clip_specs(config, data.dataset_fpcs, 1)[0],
            _train_transform(config),
            weights=data.shards_weights,
            num_clips=data.num_clips,
            seed=config.meta.seed,
            interleave=config.shards.interleave,
            resample=config.shards.resample,
            max_open_files=config.shards.max_open_files,
            decoder=data.decoder,
            manifests=data.shards,
        )
        dataset.decode_max_short_side = data.decode_max_short_side
        return dataset
    records = _read_listings(data.datasets, "datasets", names)
    specs = _clip_specs(config, data.dataset_fpcs, len(records))
    return VideoClipDataset(
        list(zip(records, specs)),
        _train_transform(config),
        num_clips=data.num_clips,
        train=True,
        random_clip_sampling=data.random_clip_sampling,
        allow_clip_overlap=data.allow_clip_overlap,
        decoder=data.decoder,
        seed=config.meta.seed,
        min_frames=data.min_frames,
        decode_max_short_side=data.decode_max_short_side,
        frame_fps=_frame_rates(config, len(records)),
    )


def build_val_dataset(config: Config, names: list[str] | None = None) -> VideoSource | None:
    """Deterministic multi-view validation data over ``data.val_datasets`` or ``data.val_shards``
    (None if neither is set)."""
    data = config.data
    if data.val_shards:
        shards = [shard for source in _shard_sources(data.val_shards, "val_shards") for shard in source]
        dataset = ShardEvalDataset(
            shards,
            _clip_specs(config, data.val_dataset_fpcs, 1, validation=True)[0],
            EvalTransform(data.crop_size, num_views=data.num_views, normalize=False),
            num_clips=data.val_num_clips,
            decoder=data.decoder,
            manifests=data.val_shards,
        )
        dataset.decode_max_short_side = data.decode_max_short_side
        return dataset
    if not data.val_datasets:
        return None
    records = _read_listings(data.val_datasets, "val_datasets", names)
    specs = _clip_specs(config, data.val_dataset_fpcs, len(records), validation=True)
    return VideoClipDataset(
        list(zip(records, specs)),
        EvalTransform(data.crop_size, num_views=data.num_views, normalize=False),
        num_clips=data.val_num_clips,
        train=False,
        random_clip_sampling=data.val_random_clip_sampling,
        seed=config.meta.seed,
        allow_clip_overlap=data.allow_clip_overlap,
        decoder=data.decoder,
        decode_max_short_side=data.decode_max_short_side,
        frame_fps=_frame_rates(config, len(records), validation=True),
    )


def infer_num_classes(config: Config, dataset: VideoSource, names: list[str] | None = None) -> int:
    """``meta.num_classes``, or the number of class names, or what the training data implies
    (1 + its largest label; a shard manifest's label map). Labels are checked afterwards
    (:func:`harness.training.checks.check_labels`)."""
    if config.meta.num_classes:
        return config.meta.num_classes
    if names is not None:
        return len(names)
    count = dataset.class_count()
    if count is None:
        raise ConfigError("meta.num_classes is 0 and the training data implies no class count (shards without a "
                          "manifest label map): set meta.num_classes")  # fmt: skip
    return count


def build_loaders(
    config: Config, strategy: Strategy, train_set: VideoSource, val_set: VideoSource | None
) -> tuple[DataLoader, DataLoader | None]:
    """Per-rank loaders; a training epoch has ``ipe * accumulation_steps`` batches when ``ipe`` is set."""
    data, opt = config.data, config.optimization
    settings = LoaderSettings(
        data.batch_size, strategy.rank, strategy.world_size, data.num_workers,
        pin_memory=data.pin_mem and strategy.device.type == "cuda", persistent_workers=data.persistent_workers,
        seed=config.meta.seed, batches_per_epoch=opt.ipe * opt.accumulation_steps if opt.ipe is not None else None,
        samples_per_epoch=config.shards.samples_per_epoch,
        source_weights=tuple(data.datasets_weights) if data.datasets_weights is not None else None,
        repeats=data.repeated_aug, class_balance=data.class_balanced_sampling,
        quarantine=Path(config.folder) / f"quarantine_r{strategy.rank}.txt",
    )  # fmt: skip
    train_loader = train_set.make_loader(settings, train=True)
    return train_loader, build_val_loader(config, strategy, val_set) if val_set is not None else None


def build_val_loader(config: Config, strategy: Strategy, val_set: VideoSource) -> DataLoader:
    """This rank's exact share of the validation set (no padding), in a fixed order."""
    data = config.data
    persistent = data.persistent_workers if data.val_persistent_workers is None else data.val_persistent_workers
    settings = LoaderSettings(
        data.val_batch_size or data.batch_size, strategy.rank, strategy.world_size,
        data.num_workers if data.val_num_workers is None else data.val_num_workers,
        pin_memory=data.pin_mem and strategy.device.type == "cuda", persistent_workers=persistent,
        quarantine=Path(config.folder) / f"quarantine_r{strategy.rank}.txt",
    )  # fmt: skip
    return val_set.make_loader(settings, train=False)
