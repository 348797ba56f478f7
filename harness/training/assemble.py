"""From a :class:`~harness.config.Config` to the parts the trainer composes.

This is the only place where the config tree meets the data and model packages, which take
plain arguments. Each ``build_*`` function does one thing and can be called on its own.
"""

from __future__ import annotations

import logging
from pathlib import Path

from torch import nn
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
from harness.models import (
    AttentiveClassifier,
    CheckpointError,
    EncoderSettings,
    LinearClassifier,
    ModelFamily,
    MultiHeadClassifier,
    VideoClassifier,
    family_of,
    family_of_module,
    load_classifier,
    load_encoder,
    materialize,
)
from harness.models.checkpoint_io import hf_family
from harness.models.hf_directory import is_hf_directory
from harness.parallel.activation_checkpoint import apply_activation_checkpointing
from harness.parallel.distributed import process_info
from harness.parallel.head_steps import HeadScaler
from harness.parallel.precision import hold_frozen_weights
from harness.parallel.registry import STRATEGY_SPECS
from harness.parallel.strategy import Strategy, build_strategy, resolve_strategy_name
from harness.training.classes import labelled, listing_records

log = logging.getLogger(__name__)


def build_strategy_from_config(config: Config) -> Strategy:
    """Device, precision and strategy for this process (joins the process group when distributed)."""
    dist_cfg = config.distributed
    name = resolve_strategy_name(dist_cfg.strategy, process_info().world_size)
    options = STRATEGY_SPECS[name].options(dist_cfg, config.data, config.optimization)
    strategy = build_strategy(name, config.meta.device, config.meta.dtype, dist_cfg.backend, options)
    heads = len(config.optimization.heads)
    if strategy.precision.scaler is not None and heads > 1:  # float16 grid: one loss scale per head
        strategy.precision.scaler = HeadScaler(heads, strategy.device, strategy.all_reduce_sum)
    return strategy


def ensure_demo_data(config: Config) -> None:
    """With ``data.generate_demo_data``, write the synthetic demo videos where the listings
    point (``<folder>/train.csv`` and ``<folder>/val.csv``) if they are missing."""
    if not config.data.generate_demo_data:
        return
    listings = [Path(p) for p in config.data.datasets + config.data.val_datasets]
    class_file = Path(config.data.class_names) if config.data.class_names else None
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


def build_encoder(config: Config, device: str | None = None, defer_blocks: bool = False) -> nn.Module:
    """The encoder of ``model.model_name``'s family with its pretrained weights
    (``meta.pretrain_checkpoint``: any layout the family reads; a Hugging Face directory's
    ``config.json`` then sets the architecture). ``device="meta"`` builds it without memory
    (no weights are loaded then); ``defer_blocks`` leaves the blocks on the meta device for a
    sharding strategy to materialise one at a time (``encoder.deferred_blocks``)."""
    model_cfg, data, meta = config.model, config.data, config.meta
    family = family_of(model_cfg.model_name)
    settings = EncoderSettings(
        img_size=data.crop_size, num_frames=max(data.dataset_fpcs), patch_size=data.patch_size,
        tubelet_size=data.tubelet_size, depth=model_cfg.depth, drop_path_rate=model_cfg.drop_path_rate,
        use_sdpa=meta.use_sdpa, out_layers=tuple(model_cfg.out_layers) if model_cfg.out_layers else None,
    )  # fmt: skip
    options = {key: getattr(model_cfg, key) for key in family.top_level_options}
    options.update(model_cfg.options)
    pretrained = meta.pretrain_checkpoint if meta.load_encoder else None
    size_overrides = {}
    if pretrained and is_hf_directory(pretrained):
        size_overrides = _hf_encoder_options(family, pretrained, "meta.pretrain_checkpoint")
        log.info("encoder architecture from %s/config.json: %s", pretrained, size_overrides)
    try:
        encoder = family.create(model_cfg.model_name, settings, options, "meta" if defer_blocks else device,
                                **size_overrides)  # fmt: skip
    except ValueError as error:
        raise ConfigError(f"model: {error}") from None
    if defer_blocks:
        materialize(encoder, "cpu", blocks=False)
    if pretrained and device != "meta":
        report = load_encoder(encoder, pretrained, key=meta.checkpoint_key)
        log.info("encoder: %s", report.summary())
    elif meta.load_encoder and not meta.finetune_encoder and not pretrained:
        log.warning("meta.pretrain_checkpoint is not set: the frozen encoder keeps its random initialisation")
    return encoder


def _hf_encoder_options(family: ModelFamily, path: str, key: str) -> dict:
    try:
        _, hf_config = hf_family(path, family)
    except CheckpointError as error:
        raise ConfigError(f"{key}: {error}") from None
    try:
        return family.hf.encoder_options(hf_config)
    except ValueError as error:
        raise ConfigError(f"{key}: {path}: {error}") from None


def classifier_kind(config: Config) -> str:
    """``attentive`` or ``linear``: ``model.classifier``, or the model family's own head for ``auto``."""
    kind = config.model.classifier
    return family_of(config.model.model_name).default_classifier if kind == "auto" else kind


def build_classifier(config: Config, encoder: nn.Module, num_classes: int) -> nn.Module:
    """The classifier over ``encoder``'s tokens (one per ``optimization.heads`` entry when there are
    several): V-JEPA 2's attentive probe or a linear head (:func:`classifier_kind`), with
    ``meta.classifier_checkpoint`` loaded strictly when set (a V-JEPA 2 eval file's
    ``classifiers``, head ``i`` from entry ``i`` or one head from ``meta.classifier_index``; a
    VideoMAE file's ``fc_norm``/``head``; a Hugging Face classification directory)."""
    model_cfg, meta = config.model, config.meta
    family, kind = family_of_module(encoder), classifier_kind(config)
    path = meta.classifier_checkpoint
    options = {"norm_eps": model_cfg.pooler_norm_eps}
    if path and is_hf_directory(path):
        options.update(_hf_classifier_options(family, path, num_classes))
        stored = options.pop("kind")
        if stored != kind:
            raise ConfigError(f"meta.classifier_checkpoint {path} holds a {stored} head; "
                              f"model.classifier is {kind}")  # fmt: skip
    count = max(1, len(config.optimization.heads))
    if kind == "linear":
        heads = [LinearClassifier(encoder.embed_dim, num_classes, getattr(encoder, "head_pooling", "mean"),
                                  options["norm_eps"]) for _ in range(count)]  # fmt: skip
    else:
        attentive = {"num_heads": model_cfg.attn_pooler_heads or encoder.num_heads,
                     "depth": model_cfg.attn_pooler_depth, "use_sdpa": meta.use_sdpa, "order": model_cfg.pooler_order,
                     "output_projection": model_cfg.pooler_output_projection, **options}  # fmt: skip
        heads = [AttentiveClassifier(encoder.embed_dim, num_classes, **attentive) for _ in range(count)]
    if path:
        indices = range(count) if count > 1 else [meta.classifier_index]
        for head, index in zip(heads, indices):
            report = load_classifier(head, path, index=index, family=family.name)
            log.info("classifier head %d: %s", index, report.summary())
    return heads[0] if count == 1 else MultiHeadClassifier(heads)


def _hf_classifier_options(family: ModelFamily, path: str, num_classes: int) -> dict:
    try:
        _, hf_config = hf_family(path, family)
    except CheckpointError as error:
        raise ConfigError(f"meta.classifier_checkpoint: {error}") from None
    if family.hf.classifier_options is None:
        raise ConfigError(f"meta.classifier_checkpoint: {path}: the {family.name} family reads no Hugging Face "
                          "classifier")  # fmt: skip
    labels = hf_config.get("id2label") or {}
    if (len(labels) if labels else hf_config.get("num_labels", 2)) != num_classes:
        raise ConfigError(f"meta.classifier_checkpoint {path} has another number of classes than {num_classes}")
    return family.hf.classifier_options(hf_config)


def build_model(
    config: Config, num_classes: int, device: str | None = None, defer_blocks: bool = False
) -> VideoClassifier:
    """Encoder (pretrained weights loaded first) + classifier, on the CPU (``device="meta"``: the
    encoder without memory and without reading weights, for the planner; ``defer_blocks``: the
    encoder's blocks left for the strategy to materialise, see :func:`build_encoder`).

    Activation checkpointing is applied here from outside the model; compile and distributed
    wrapping come after (the strategy's ``prepare``).
    """
    model_cfg, meta = config.model, config.meta
    encoder = build_encoder(config, device, defer_blocks)
    classifier = build_classifier(config, encoder, num_classes)
    if model_cfg.use_activation_checkpointing and meta.finetune_encoder:
        apply_activation_checkpointing(encoder.blocks, model_cfg.activation_checkpointing_every)
    aggregation = "average_logits" if model_cfg.clip_aggregation == "auto" else model_cfg.clip_aggregation
    model = VideoClassifier(encoder, classifier, freeze_encoder=not meta.finetune_encoder,
                            clip_aggregation=aggregation, temporal_pos_embed=model_cfg.temporal_pos_embed,
                            max_frames=model_cfg.max_frames)  # fmt: skip
    if model_cfg.compile_model:
        # Per block and in place (torchtitan's way): names and checkpoints stay the same, and the
        # compiled blocks are the units that FSDP2 shards afterwards.
        for block in encoder.blocks:
            block.compile()
    return model


def hold_frozen_encoder(model: VideoClassifier, config: Config, strategy: Strategy) -> None:
    """A frozen encoder read from ``meta.pretrain_checkpoint`` keeps its matmul weights in the run's
    autocast dtype (:func:`~harness.parallel.precision.hold_frozen_weights`: the same outputs,
    half its memory, no cast per forward; 1.00-1.03x a probe step on a CPU). Such an encoder is
    never saved (checkpoints and exports read the file again), so nothing written changes; a
    frozen random encoder is saved and stays fp32. Sharding strategies cast on their own."""
    meta = config.meta
    if meta.finetune_encoder or not meta.pretrain_checkpoint or not strategy.holds_frozen_weights:
        return
    cast = hold_frozen_weights(model.encoder, strategy.precision.dtype)
    if cast:
        log.info("frozen encoder: %.1fM matmul weights held in %s", cast / 1e6, strategy.precision.name)
