"""The model a run trains, from the config: the family's encoder with its pretrained weights, the
classifier head(s), activation checkpointing and compile applied from outside the model. Part of
:mod:`harness.training.assemble`, which hands the model to the strategy (:func:`~harness.
training.assemble.prepare_model`).
"""

from __future__ import annotations

import logging

from torch import nn

from harness.config import Config, ConfigError
from harness.core.crop import crop_hw
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
    materialize_stem,
)
from harness.models.checkpoint_io import hf_family
from harness.models.family import DeferredBlocks
from harness.models.hf_directory import is_hf_directory
from harness.parallel.activation_checkpoint import apply_activation_checkpointing
from harness.parallel.precision import hold_frozen_weights
from harness.parallel.strategy import Strategy

log = logging.getLogger(__name__)


def build_encoder(config: Config, device: str | None = None) -> nn.Module:
    """The encoder of ``model.model_name``'s family with its pretrained weights
    (``meta.pretrain_checkpoint``: any layout the family reads; a Hugging Face directory's
    ``config.json`` then sets the architecture). ``device="meta"`` builds it without memory
    (no weights are loaded then)."""
    return _encoder(config, device, defer_blocks=False)[0]


def _encoder(config: Config, device: str | None, defer_blocks: bool) -> tuple[nn.Module, DeferredBlocks | None]:
    """:func:`build_encoder`; ``defer_blocks`` leaves the blocks on the meta device for a sharding
    strategy to materialise one at a time, as the returned :class:`DeferredBlocks` says."""
    model_cfg, data, meta = config.model, config.data, config.meta
    family = family_of(model_cfg.model_name)
    settings = EncoderSettings(
        img_size=crop_hw(data.crop_size), num_frames=max(data.dataset_fpcs), patch_size=data.patch_size,
        tubelet_size=data.tubelet_size, depth=model_cfg.depth, drop_path_rate=model_cfg.drop_path_rate,
        use_sdpa=meta.use_sdpa, out_layers=tuple(model_cfg.out_layers) if model_cfg.out_layers else None,
        level_concat=model_cfg.level_concat,
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
    deferred = materialize_stem(encoder, "cpu") if defer_blocks else None
    if pretrained and device != "meta":
        report = load_encoder(encoder, pretrained, key=meta.checkpoint_key, deferred=deferred)
        log.info("encoder: %s", report.summary())
    elif meta.load_encoder and not meta.finetune_encoder and not pretrained:
        log.warning("meta.pretrain_checkpoint is not set: the frozen encoder keeps its random initialisation")
    return encoder, deferred


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
        heads = [LinearClassifier(encoder.feature_dim, num_classes, getattr(encoder, "head_pooling", "mean"),
                                  options["norm_eps"]) for _ in range(count)]  # fmt: skip
    else:
        attentive = {"num_heads": model_cfg.attn_pooler_heads or encoder.num_heads,
                     "depth": model_cfg.attn_pooler_depth, "use_sdpa": meta.use_sdpa, "order": model_cfg.pooler_order,
                     "output_projection": model_cfg.pooler_output_projection, **options}  # fmt: skip
        heads = [AttentiveClassifier(encoder.feature_dim, num_classes, **attentive) for _ in range(count)]
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


def build_model(config: Config, num_classes: int, device: str | None = None) -> VideoClassifier:
    """Encoder (pretrained weights loaded first) + classifier, on the CPU (``device="meta"``: the
    encoder without memory and without reading weights, for the planner).

    Activation checkpointing is applied here from outside the model; compile and distributed
    wrapping come after (the strategy's ``prepare``;
    :func:`harness.training.assemble.prepare_model` does both).
    """
    return _model(config, num_classes, device, defer_blocks=False)[0]


def build_model_deferred(config: Config, num_classes: int) -> tuple[VideoClassifier, DeferredBlocks]:
    """:func:`build_model` with the encoder's blocks left on the meta device, and how to make them
    (for a sharding strategy's ``prepare``, which materialises one block at a time)."""
    return _model(config, num_classes, None, defer_blocks=True)


def _model(config: Config, num_classes: int, device: str | None,
           defer_blocks: bool) -> tuple[VideoClassifier, DeferredBlocks | None]:  # fmt: skip
    model_cfg, meta = config.model, config.meta
    encoder, deferred = _encoder(config, device, defer_blocks)
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
    return model, deferred


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
