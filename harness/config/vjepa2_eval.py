"""V-JEPA 2's evaluation configs (``configs/eval/*``, ``configs/inference/*``) as harness configs.

Those files (``eval_name: video_classification_frozen``) are how V-JEPA 2's published probe numbers
were made. :func:`translate` maps each key its ``evals/video_classification_frozen/eval.py`` reads
onto our sections and returns, with the result, one note per key saying what it became, so the
resolved ``config.yaml`` can show it. Launcher keys are reported as ignored; any other key is an
error, as in our own files. The protocol's fixed choices (its training augmentation, segment
overlap, the warmup-cosine schedule, concatenated clip tokens, ``optimization.protocol: vjepa2``
with no gradient clipping) are set explicitly.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from harness.config.schema import ConfigError

EVAL_NAME = "video_classification_frozen"
#: V-JEPA 2's clip wrappers (the multi-level one reads ``wrapper_kwargs.out_layers``).
MODULES = (
    "evals.video_classification_frozen.modelcustom.vit_encoder_multiclip",
    "evals.video_classification_frozen.modelcustom.vit_encoder_multiclip_multilevel",
)
IGNORED = None  # a mapping target: the key is accepted and reported as ignored
HANDLED = object()  # a mapping target: the key is read elsewhere (a sub-section, or checked)
LAUNCHER_KEYS = ("nodes", "tasks_per_node", "cpus_per_task", "mem_per_gpu", "max_workers", "tag")
#: V-JEPA 2's spatiotemporal area attention (``pretrain_kwargs.encoder``), the vit family's options
AREA_KEYS = ("use_area_attention", "area_attention_layers", "area_spatial_splits", "area_temporal_splits",
             "area_residual_scale")  # fmt: skip
EVAL_SECTIONS = ("experiment", "model_kwargs")
EVAL_TOP_KEYS = ("eval_name", "val_only", "resume_checkpoint", "classifier_checkpoint", "num_workers")
# V-JEPA 2's eval trains its probes with these augmentations (make_dataloader in eval.py).
TRAIN_AUGMENTATION = {
    "auto_augment": True,
    "horizontal_flip": False,
    "motion_shift": False,
    "random_resize_aspect_ratio": [0.75, 4 / 3],
    "random_resize_scale": [0.08, 1.0],
    "reprob": 0.25,
}


def is_eval_layout(values: dict[str, Any]) -> bool:
    """A V-JEPA 2 evaluation file: it names an ``eval_name`` or has an ``experiment`` section."""
    return "eval_name" in values or "experiment" in values


class _Translation:
    def __init__(self, source: str) -> None:
        self.source = source
        self.out: dict[str, Any] = {}
        self.notes: list[str] = []
        self.ignored: list[str] = []

    def set(self, key: str, value: Any, origin: str | None = None) -> None:
        node = self.out
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
        self.notes.append(f"{origin} -> {key}" if origin else f"{key}: {value!r} (V-JEPA 2 eval protocol)")

    def take(self, section: dict[str, Any], where: str, mapping: dict[str, Any]) -> None:
        """Map every key of ``section``; unknown keys are errors naming the file and key."""
        if not isinstance(section, dict):
            raise ConfigError(f"{self.source}: {where} must be a mapping, got {section!r}")
        for key, value in section.items():
            origin = f"{where}.{key}" if where else key
            if key not in mapping:
                known = ", ".join(sorted(mapping))
                raise ConfigError(f"{self.source}: unknown V-JEPA 2 eval key {origin!r} (known here: {known})")
            target = mapping[key]
            if target is HANDLED:
                continue
            if target is IGNORED:
                self.ignored.append(origin)
            elif callable(target):
                target(value, origin)
            else:
                self.set(target, value, origin)


def translate(values: dict[str, Any], source: str) -> tuple[dict[str, Any], list[str], list[str]]:
    """``(harness values, notes, ignored keys)`` for a V-JEPA 2 eval file's ``values``."""
    t = _Translation(source)
    if values.get("eval_name", EVAL_NAME) != EVAL_NAME:
        raise ConfigError(f"{source}: eval_name {values['eval_name']!r} is not supported (only {EVAL_NAME})")
    experiment = values.get("experiment") or {}
    model_kwargs = values.get("model_kwargs") or {}
    tag = values.get("tag")

    def folder(value: Any, origin: str) -> None:
        # V-JEPA 2 writes into <folder>/video_classification_frozen/<tag>.
        path = PurePosixPath(str(value)) / EVAL_NAME
        t.set("folder", str(path / tag) if tag else str(path), origin + (" (+ /video_classification_frozen/tag)"))

    t.take(
        {k: v for k, v in values.items() if k not in EVAL_SECTIONS},
        "",
        {
            "eval_name": HANDLED,  # checked above
            "folder": folder,
            "val_only": "meta.eval_only",
            "resume_checkpoint": "meta.load_checkpoint",
            "classifier_checkpoint": "meta.classifier_checkpoint",
            "num_workers": "data.num_workers",
            **dict.fromkeys(LAUNCHER_KEYS, IGNORED),
        },
    )
    _experiment(t, experiment)
    _model(t, model_kwargs)
    for key, value in TRAIN_AUGMENTATION.items():
        t.set(f"data_aug.{key}", value)
    t.set("data.allow_clip_overlap", True)
    t.set("data.sampling_rule", "vjepa2")
    t.set("model.clip_aggregation", "concat_tokens")
    t.set("optimization.lr_schedule", "cosine")
    t.set("optimization.protocol", "vjepa2")
    t.set("optimization.clip_grad", None)  # V-JEPA 2's eval does not clip
    t.set("meta.load_encoder", True)
    t.set("meta.finetune_encoder", False)
    return t.out, t.notes, t.ignored


def _experiment(t: _Translation, experiment: dict[str, Any]) -> None:
    def listing(key: str) -> Any:
        return lambda value, origin: t.set(key, [value] if isinstance(value, str) else value, origin)

    def frames(value: Any, origin: str) -> None:
        t.set("data.dataset_fpcs", [value], origin)
        t.set("data.val_dataset_fpcs", [value], origin)

    def segments(value: Any, origin: str) -> None:
        t.set("data.num_clips", value, origin)
        t.set("data.val_num_clips", value, origin)

    def normalization(value: Any, origin: str) -> None:
        if value is not None:
            raise ConfigError(f"{t.source}: {origin}: only V-JEPA 2's default ImageNet normalisation is supported")
        t.ignored.append(origin)

    def batch(value: Any, origin: str) -> None:
        t.set("data.batch_size", value, origin)
        t.set("data.val_batch_size", value, origin)

    def bfloat16(value: Any, origin: str) -> None:
        # V-JEPA 2's eval.py reads use_bfloat16 as float16 autocast with a GradScaler per head;
        # meta.dtype=bfloat16 (an override after the file) trains in bf16 instead.
        t.set("meta.dtype", "float16" if value else "float32", origin + (" (float16, as its eval.py)" if value else ""))

    def heads(value: Any, origin: str) -> None:
        _multihead(t, value, origin)

    t.take(experiment, "experiment", dict.fromkeys(("classifier", "data", "optimization"), HANDLED))
    t.take(
        experiment.get("classifier") or {},
        "experiment.classifier",
        {"num_heads": "model.attn_pooler_heads", "num_probe_blocks": "model.attn_pooler_depth"},
    )
    t.take(
        experiment.get("data") or {},
        "experiment.data",
        {
            "dataset_type": "data.dataset_type",
            "dataset_train": listing("data.datasets"),
            "dataset_val": listing("data.val_datasets"),
            "num_classes": "meta.num_classes",
            "resolution": "data.crop_size",
            "num_segments": segments,
            "frames_per_clip": frames,
            "frame_step": "data.frame_step",
            "clip_duration": "data.duration",
            "num_views_per_segment": "data.num_views",
            "normalization": normalization,
        },
    )
    t.take(
        experiment.get("optimization") or {},
        "experiment.optimization",
        {
            "batch_size": batch,
            "num_epochs": "optimization.epochs",
            "use_bfloat16": bfloat16,
            "multihead_kwargs": heads,
            "use_pos_embed": IGNORED,  # not read by eval.py; the wrapper's use_pos_embed is what counts
        },
    )


def _multihead(t: _Translation, heads: Any, origin: str) -> None:
    """``multihead_kwargs``: one probe head per entry (V-JEPA 2's lr x wd grid), each with its
    own schedule; a single entry sets the run's own lr / wd keys."""
    if not isinstance(heads, list) or not heads or not all(isinstance(h, dict) for h in heads):
        raise ConfigError(f"{t.source}: {origin} must be a non-empty list of mappings")
    keys = ("lr", "start_lr", "final_lr", "warmup", "weight_decay", "final_weight_decay")
    for index, head in enumerate(heads):
        unknown = sorted(set(head) - set(keys))
        if unknown:
            raise ConfigError(f"{t.source}: unknown key {origin}[{index}].{unknown[0]} (known: {', '.join(keys)})")
    # The run's own keys follow the first head (what the logs show as the run's lr / wd); with
    # several heads each also keeps its own schedule.
    for key in keys:
        if key in heads[0]:
            t.set(f"optimization.{key}", heads[0][key], f"{origin}[0].{key}")
    if len(heads) > 1:
        t.set("optimization.heads", [dict(head) for head in heads], f"{origin} ({len(heads)} heads)")


def _model(t: _Translation, model_kwargs: dict[str, Any]) -> None:
    def module(value: Any, origin: str) -> None:
        if value not in MODULES:
            raise ConfigError(f"{t.source}: {origin} {value!r} is not supported (known: {', '.join(MODULES)})")
        t.notes.append(f"{origin} -> model.clip_aggregation=concat_tokens")

    def unsupported_if_true(value: Any, origin: str) -> None:
        if value:
            raise ConfigError(f"{t.source}: {origin} is not supported by the harness encoder")
        t.ignored.append(origin)

    t.take(
        model_kwargs,
        "model_kwargs",
        {
            "checkpoint": "meta.pretrain_checkpoint",
            "module_name": module,
            "pretrain_kwargs": HANDLED,
            "wrapper_kwargs": HANDLED,
        },
    )
    pretrain = model_kwargs.get("pretrain_kwargs") or {}
    t.take(pretrain, "model_kwargs.pretrain_kwargs", {"encoder": HANDLED})
    t.take(
        pretrain.get("encoder") or {},
        "model_kwargs.pretrain_kwargs.encoder",
        {
            "model_name": "model.model_name",
            "checkpoint_key": "meta.checkpoint_key",
            "patch_size": "data.patch_size",
            "tubelet_size": "data.tubelet_size",
            "uniform_power": "model.uniform_power",
            "use_rope": "model.use_rope",
            "use_silu": "model.use_silu",
            "wide_silu": "model.wide_silu",
            "use_sdpa": "meta.use_sdpa",
            "img_temporal_dim_size": unsupported_if_true,
            "use_activation_checkpointing": IGNORED,  # frozen encoder: nothing to recompute
            **dict.fromkeys(AREA_KEYS, HANDLED),
        },
    )
    _area_attention(t, pretrain.get("encoder") or {}, "model_kwargs.pretrain_kwargs.encoder")
    t.take(
        model_kwargs.get("wrapper_kwargs") or {},
        "model_kwargs.wrapper_kwargs",
        {
            "max_frames": "model.max_frames",
            "use_pos_embed": "model.temporal_pos_embed",
            "out_layers": "model.out_layers",
        },
    )


def _area_attention(t: _Translation, encoder: dict[str, Any], where: str) -> None:
    """V-JEPA 2's area attention keys: ``model.<key>`` when its encoder builds area attention
    (``use_area_attention`` with RoPE), else reported as ignored, as its encoder ignores them
    (without RoPE its blocks keep full attention whatever ``use_area_attention`` says)."""
    present = [key for key in AREA_KEYS if key in encoder]
    if not present:
        return
    rope = bool(encoder.get("use_rope")) or str(encoder.get("model_name", "")).endswith("_rope")
    if encoder.get("use_area_attention") and rope:
        for key in present:
            t.set(f"model.{key}", encoder[key], f"{where}.{key}")
        return
    reason = "without use_rope" if encoder.get("use_area_attention") else "without use_area_attention"
    t.ignored.extend(f"{where}.{key}" for key in present)
    t.notes.append(f"{where}.{{{','.join(present)}}}: ignored, as V-JEPA 2's encoder {reason} keeps full attention")
