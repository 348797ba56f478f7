"""Cross-field rules, and the check of each key against the range or choices its field declares.

:func:`validate` runs after loading: every conflict is a :class:`ConfigError` naming the keys
involved (what, where, what to do). The ranges and choices themselves are declared on the schema's
fields (:mod:`harness.config.fields`) and read back as :data:`~harness.config.schema.RANGES` and
:data:`~harness.config.schema.CHOICES`.
"""

from __future__ import annotations

import difflib
import math
import re
from pathlib import Path
from typing import Any

from harness.config.fields import lookup
from harness.config.schema import CHOICES, RANGES, Config, ConfigError
from harness.parallel.registry import OPTIONS_SECTIONS


def validate(config: Config) -> Config:
    """Cross-field checks: conflicting options are errors that name both keys."""
    _check_sampling_and_counts(config)
    _check_choices(config)
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
    _check_sources(config)
    _check_class_balance(config)
    _check_label_sets(config)
    _check_encoder_batch(config)
    side = config.data.decode_max_short_side
    if side != "auto" and not (isinstance(side, int) and side >= 0):
        raise ConfigError(f"data.decode_max_short_side: {side!r} is neither 'auto', 0 (full size) nor a size in pixels")
    _check_options_sections(config)
    return config


def _check_options_sections(config: Config) -> None:
    """A strategy's section checks what its field metadata cannot express (its ``problem()``)."""
    for name in OPTIONS_SECTIONS:
        check = getattr(getattr(config.distributed, name), "problem", None)
        problem = check() if check is not None else None
        if problem:
            raise ConfigError(f"distributed.{name}.{problem}")


def _check_sampling_and_counts(config: Config) -> None:
    """One sampling rule per split; as many weights and frames-per-clip entries as listings."""
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
    val_rates = "val_frame_folder_fps" if data.val_frame_folder_fps is not None else "frame_folder_fps"
    for listing_key, rate_key in (("datasets", "frame_folder_fps"), ("val_datasets", val_rates)):
        listings, rates = getattr(data, listing_key), getattr(data, rate_key)
        if listings and len(rates) not in (0, 1, len(listings)):
            fallback = listing_key == "val_datasets" and rate_key == "frame_folder_fps"
            hint = "; set data.val_frame_folder_fps (one rate, or one per validation listing)" if fallback else ""
            raise ConfigError(f"data.{rate_key} has {len(rates)} entries for {len(listings)} data.{listing_key}{hint}")
    for listing_key, fpc_key in (("datasets", "dataset_fpcs"), ("val_datasets", "val_dataset_fpcs")):
        listings, fpcs = getattr(data, listing_key), getattr(data, fpc_key)
        if listings and len(fpcs) not in (1, len(listings)):
            raise ConfigError(f"data.{fpc_key} has {len(fpcs)} entries for {len(listings)} data.{listing_key}")
        if len(set(fpcs)) > 1:
            raise ConfigError(
                f"data.{fpc_key}: {fpcs} differ; the clips of one batch are stacked, so every listing needs the "
                "same frames per clip"
            )


def _check_choices(config: Config) -> None:
    """Each choice key holds one of its declared values (with a suggestion when one is close)."""
    for key, options in CHOICES.items():
        value = lookup(config, key)
        if value not in options:
            close = difflib.get_close_matches(str(value), options, n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(options)}{hint}")


def _check_sources(config: Config) -> None:
    """Listings or shards per split, weights that match them, and what repeated augmentation allows."""
    data = config.data
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


SET_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")  # a set's name is part of column names (val_top1_verb)
#: options that read one class id per video, or one list of classes: not (yet) made for label sets
NOT_WITH_LABEL_SETS = {
    "meta.multi_label": "several classes of one list per video (multi-label) or one class per set, not both",
    "meta.num_classes": "give each set's classes in meta.label_sets instead ({verb: 97, noun: 300})",
    "optimization.class_weights": "class weights are per class of one set; not available for label sets",
    "data.class_balanced_sampling": "balancing draws by one class per video; not available for label sets",
    "data.shards": "label sets read listings (data.datasets), not shards",
    "data.val_shards": "label sets read listings (data.val_datasets), not shards",
    "logging.explain_videos": "its captions name one class per video; not available for label sets",
    "logging.embedding_projector": "its table names one class per video; not available for label sets",
}


def _check_label_sets(config: Config) -> None:
    """``meta.label_sets``: distinct names usable in column names, class counts >= 0, one class-name
    file per set, a ``label_set_metric`` among the sets, and no option made for one label per video."""
    meta, data = config.meta, config.data
    sets = meta.label_sets
    if not sets:
        if isinstance(data.class_names, dict):
            raise ConfigError("data.class_names is a mapping (one file per label set) but meta.label_sets is not "
                              "set: give one file, or set meta.label_sets")  # fmt: skip
        if meta.label_set_metric != "mean":
            raise ConfigError(f"meta.label_set_metric={meta.label_set_metric!r} needs meta.label_sets")
        return
    names = [str(name) for name in sets]
    for name in names:
        if not SET_NAME.fullmatch(name) or re.fullmatch(r"h\d+", name) or name == "mean":
            raise ConfigError(f"meta.label_sets: {name!r} is not a usable set name: letters, digits and _, starting "
                              "with a letter (not 'mean' or h<digits>: those name other columns)")  # fmt: skip
    if len(set(names)) != len(names):
        raise ConfigError(f"meta.label_sets: {names} names a set twice")
    sizes = sets.values() if isinstance(sets, dict) else []
    if any(size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0) for size in sizes):
        raise ConfigError(f"meta.label_sets: {dict(sets)} must give each set's classes as an integer >= 0 (0: "
                          "inferred from the training listings)")  # fmt: skip
    for key, why in NOT_WITH_LABEL_SETS.items():
        if lookup(config, key) not in (False, 0, None, []):
            raise ConfigError(f"{key} is set together with meta.label_sets: {why}")
    if isinstance(data.class_names, str):
        raise ConfigError(f"data.class_names: with meta.label_sets give one file per set ({{{names[0]}: "
                          f"{data.class_names}}}), not one for all")  # fmt: skip
    unknown = sorted(set(map(str, data.class_names or {})) - set(names))
    if unknown:
        raise ConfigError(f"data.class_names: {unknown} are not among meta.label_sets {names}")
    if meta.label_set_metric not in ("mean", *names):
        raise ConfigError(f"meta.label_set_metric: {meta.label_set_metric!r} is neither 'mean' nor one of the label "
                          f"sets {names}")  # fmt: skip


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
    _check_crop(data.crop_size, data.patch_size)
    for key in ("dataset_fpcs", "val_dataset_fpcs"):
        odd = [frames for frames in getattr(data, key) if frames % data.tubelet_size]
        if 1 in odd:
            problem = _image_path_problem(config)
            if problem:
                raise ConfigError(f"data.{key}: 1 frame per clip (images) needs an encoder with an image path; "
                                  f"{problem}")  # fmt: skip
        odd = [frames for frames in odd if frames != 1]  # 1 frame: the image path, checked above
        if odd:
            raise ConfigError(
                f"data.{key}: {odd[0]} frames per clip is not a multiple of data.tubelet_size={data.tubelet_size}"
            )
    model = config.model
    if model.level_concat != "auto" and not model.out_layers:
        raise ConfigError(f"model.level_concat={model.level_concat} joins the levels of model.out_layers, "
                          "which is not set: set both, or neither")  # fmt: skip
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


def _check_crop(crop: int | list[int], patch: int) -> None:
    """``data.crop_size``: one side or ``[height, width]``, each side a multiple of the patch (each
    side is >= 1 already: its declared range)."""
    if isinstance(crop, list) and len(crop) != 2:
        raise ConfigError(f"data.crop_size={crop}: give one side (a square crop) or [height, width], "
                          f"e.g. [224, 320]")  # fmt: skip
    sides = crop if isinstance(crop, list) else [crop]
    odd = [side for side in sides if side % patch]
    if odd:
        which = "" if len(sides) == 1 else f" ({'height' if sides[0] in odd else 'width'} {odd[0]})"
        raise ConfigError(f"data.crop_size={crop}{which} is not a multiple of data.patch_size={patch}")


def _image_path_problem(config: Config) -> str | None:
    """Why this run's encoder cannot take 1-frame clips through an image path, with what to change;
    None when it can (or when the model is unknown: :func:`_check_model_family` says so)."""
    from harness.models.family import FAMILIES, FamilyError, family_of

    model, tubelet = config.model, config.data.tubelet_size
    try:
        family = family_of(model.model_name)
        options = family.option_values(model.options)
    except FamilyError:
        return None
    option = family.image_path_option
    if option is not None and options[option]:
        return None
    if option is not None:
        why = f"model.model_name={model.model_name} is built without its image path (model.options.{option}=false)"
    else:
        why = f"model.model_name={model.model_name} ({family.name} family) has none"
    examples = [f"{other.name} family, e.g. model.model_name={min(other.sizes)}" for other in FAMILIES.values()
                if other.image_path_option is not None and other is not family]  # fmt: skip
    instead = f"use a model with one ({'; '.join(examples)}), " if examples else ""
    if option is not None:
        instead = f"set model.options.{option}=true, "
    return (f"{why}, so a clip's frames must fill tubelets of data.tubelet_size={tubelet}: {instead}or set "
            f"data.tubelet_size=1, or give {tubelet} frames per clip (an image is then repeated into a clip, as "
            "V-JEPA 2's image probes do)")  # fmt: skip


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
