"""Saving and restoring a run's whole state (:class:`~harness.training.state.run_state.RunContext`)
through the checkpoint manager."""

from __future__ import annotations

import copy
import json
import logging
import pickle
from pathlib import Path

from harness.config import Config, to_dict
from harness.config.renamed import move_renamed_keys
from harness.core.fileio import write_atomic
from harness.models.checkpoint_io import CheckpointError
from harness.parallel.registry import strategy_spec
from harness.training.classes import first_difference
from harness.training.optim import clean_name
from harness.training.state.checkpoint import (
    META_FILE,
    alternatives,
    checkpoint_name,
    damage,
    read_checkpoint_meta,
    resolve_checkpoint,
)
from harness.training.state.run_state import RunContext

log = logging.getLogger("harness.training.trainer")


VJEPA2_LATEST = "latest.pt"  # what V-JEPA 2's eval writes in its run folder
# Settings that shape the model's tensors: named when a checkpoint holds another model.
ARCHITECTURE_KEYS = {"model_name", "depth", "use_rope", "use_silu", "wide_silu", "attn_pooler_depth",
                     "attn_pooler_heads", "pooler_output_projection", "out_layers", "level_concat",
                     "temporal_pos_embed", "max_frames", "patch_size", "tubelet_size", "crop_size",
                     "dataset_fpcs"}  # fmt: skip


def resume(run: RunContext) -> Path | None:
    """Load ``meta.read_checkpoint``, else the run folder's ``latest`` (when
    ``meta.load_checkpoint``), else a V-JEPA 2 eval run's ``latest.pt`` in the run folder, into
    the run's parts; returns the checkpoint used or None for a fresh start."""
    meta = run.config.meta
    if meta.read_checkpoint:
        path = resolve_checkpoint(meta.read_checkpoint)
    elif meta.load_checkpoint:
        path = run.checkpoints.find("latest")
        if path is None and (run.folder / VJEPA2_LATEST).is_file():
            return resume_vjepa2(run, run.folder / VJEPA2_LATEST)
    else:
        path = None
    if path is None:
        return None
    check_same_label_sets(path, read_checkpoint_meta(path), run.label_sets)
    extra = load_checkpoint(path, run.strategy, run.model, run.optimizer, run.config, run.num_classes,
                            run.class_names)  # fmt: skip
    for name, part in run.parts.items():
        if name in extra:
            part.load_state_dict(extra[name])
    rank_state = run.checkpoints.restore_rank_state(path) or {}
    if run.ema is not None:
        if extra.get("ema") is not None:  # written before the average moved to the rank files
            run.ema.load_state_dict(extra["ema"])
        elif not run.ema.restore(path, run.strategy, run.model, rank_state):
            log.warning("%s has no EMA of the weights: the average starts from the resumed weights", path)
    run.loader.load_state_dict(rank_state.get("data"))
    _warn_config_changes(run.config, extra.get("config", {}))
    return path


def load_checkpoint(path: Path, strategy, model, optimizer, config: Config, num_classes: int,
                    class_names: list[str] | None = None) -> dict:  # fmt: skip
    """Check that ``path`` is complete, loadable by ``strategy`` and holds the model this run
    builds (with ``class_names``: for the same classes in the same order), then load it; returns
    the saved extras. Every problem is a :class:`CheckpointError` naming the file and what
    differs, with the older complete checkpoints when there are some."""
    problem = damage(path)
    if problem:
        raise CheckpointError(f"{path} is damaged: {problem}; {alternatives(path)}")
    meta = read_checkpoint_meta(path)
    check_resumable(path, meta, strategy)
    check_same_model(path, meta, strategy, model, config, num_classes)
    if class_names is not None:
        check_same_classes(path, meta.get("class_names"), class_names, config)
    try:
        return strategy.load_state(path, model, optimizer)
    except CheckpointError:
        raise
    except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"cannot read {path} ({reason}); {alternatives(path)}") from error


def model_shapes(strategy, model) -> dict[str, list[int]]:
    """Name -> whole shape of every parameter and buffer of the model, however it is sharded."""
    plain = strategy.unwrap(model)
    shapes = {clean_name(n): list(strategy.parameter_shape(p)) for n, p in plain.named_parameters()}
    return shapes | {clean_name(n): list(b.shape) for n, b in plain.named_buffers()}


def check_same_model(path: Path, meta: dict, strategy, model, config: Config, num_classes: int) -> None:
    """Refuse a checkpoint of another model (size, class count, head layout), naming the settings
    and the tensors that differ (``meta``: the checkpoint's ``meta.json``), before any
    ``load_state_dict`` fails with a dump of keys."""
    saved = meta.get("shapes")
    if saved is None:  # written before shapes were recorded: the load itself will tell
        return
    current = model_shapes(strategy, model)
    differing = sorted(k for k in saved.keys() | current.keys() if saved.get(k) != current.get(k))
    if not differing:
        return
    before, now = meta.get("config", {}), to_dict(config)
    settings = (
        [f"meta.num_classes {meta['num_classes']} -> {num_classes}"] if meta["num_classes"] != num_classes else []
    )
    for section in ("model", "data"):
        for key, value in before.get(section, {}).items():
            if key in ARCHITECTURE_KEYS and now[section].get(key) != value:
                settings.append(f"{section}.{key} {value!r} -> {now[section].get(key)!r}")
    examples = "; ".join(f"{k} {saved.get(k, 'absent')} vs {current.get(k, 'absent')}" for k in differing[:3])
    raise CheckpointError(
        f"{path} holds another model than this run builds: {len(differing)} tensors differ (e.g. {examples})"
        + (f"; settings that differ: {', '.join(settings)}" if settings else "")
        + ". Resume with the checkpoint's settings, or start a new run folder"
    )


def check_same_classes(path: Path, saved: list[str] | None, names: list[str], config: Config) -> None:
    """Refuse to resume under class names in another order than the checkpoint was trained with:
    every class id would keep its weights under another name (left and right swapped). Runs whose
    classes are only ids (on either side) are not compared."""
    ids = [str(i) for i in range(len(names))]
    if not saved or saved == ids or names == ids:
        return
    difference = first_difference(names, saved)
    if difference is None:
        return
    source = config.data.class_names or "the class names of the data (shard manifest or listings)"
    raise CheckpointError(
        f"{source} and checkpoint {path} name the classes differently ({difference}, this run's name first): "
        "resuming would train each class id under another name. Restore the checkpoint's class names "
        f"({', '.join(saved[:8])}{', ...' if len(saved) > 8 else ''} in id order), or start a new run folder"
    )


def check_same_label_sets(path: Path, meta: dict, sets) -> None:
    """Refuse a checkpoint whose label sets (``meta.json``'s ``{set: classes}``) are not this run's:
    the same total of logits cut at other places would train each set on another's outputs."""
    saved = list((meta.get("label_sets") or {}).items())
    current = list(sets.as_dict().items()) if sets is not None else []
    if saved != current:
        raise CheckpointError(f"{path} was trained with label sets {dict(saved) or 'none'}, this run has "
                              f"{dict(current) or 'none'} (meta.label_sets): resume with the checkpoint's label "
                              "sets, or start a new run folder")  # fmt: skip


def check_resumable(path: Path, meta: dict, strategy) -> None:
    """Refuse checkpoints this strategy cannot load (``meta``: the checkpoint's ``meta.json``),
    with what to do instead."""
    hint = (
        f"consolidate it (python -m harness.consolidate {path} OUT) and start a new run from "
        "OUT/model.safetensors as meta.pretrain_checkpoint, or resume with the saved setting"
    )
    problem = strategy_spec(strategy.name).resume_problem(meta["strategy"], meta["world_size"], strategy.world_size)
    if problem:
        raise CheckpointError(f"{path}: {problem}; {hint}")


def _warn_config_changes(config: Config, saved: dict) -> None:
    saved = copy.deepcopy(saved)
    move_renamed_keys(saved, [])  # a checkpoint written before a key moved compares by the new names
    current = to_dict(config)
    for section, values in saved.items():
        if isinstance(values, dict):
            _warn_section_changes(section, current.get(section) or {}, values)


def _warn_section_changes(path: str, current: dict, saved: dict) -> None:
    """Each key the checkpoint's config holds that now differs, by its dotted name (a key added
    since the checkpoint was written is not a change)."""
    for key, value in saved.items():
        now = current.get(key)
        if isinstance(value, dict) and isinstance(now, dict):
            _warn_section_changes(f"{path}.{key}", now, value)
        elif now != value:
            log.warning("resuming with %s.%s=%r (the checkpoint used %r)", path, key, now, value)


def save(run: RunContext, pointers: list[str]) -> Path:
    """Checkpoint everything resumable and point ``pointers`` at it."""
    config, state, strategy = run.config, run.state, run.strategy
    extra = {name: part.state_dict() for name, part in run.parts.items()} | {"config": to_dict(config)}
    # A frozen encoder that came from a file is not saved again (it is reloaded from there).
    trainable_only = not config.meta.finetune_encoder and bool(config.meta.pretrain_checkpoint)
    meta = {
        "strategy": strategy.name,
        "world_size": strategy.world_size,
        "epoch": state.epoch,
        "step": state.step,
        "num_classes": run.num_classes,
        "class_names": run.class_names,  # a label-set run's: every set's, end to end
        "label_sets": run.label_sets.as_dict() if run.label_sets is not None else None,
        "best_head": state.best_head,
        "trainable_only": trainable_only,
        "config": to_dict(config),
        "shapes": model_shapes(strategy, run.model),
    }

    def write(folder: Path) -> None:
        strategy.save_state(folder, run.model, run.optimizer, extra, trainable_only)
        if strategy.is_main:
            write_atomic(folder / META_FILE, lambda handle: handle.write(json.dumps(meta, indent=2).encode()))

    rank_state = {"data": run.loader.state_dict()}
    if run.ema is not None:  # each rank's shard of the average (sharded) or rank 0's whole copy
        rank_state |= run.ema.rank_state(strategy, run.model)
    name = checkpoint_name(state.epoch, state.step)
    return run.checkpoints.save(name, write, pointers, rank_state=rank_state)


def resume_vjepa2(run: RunContext, path: Path) -> Path:
    """Continue a V-JEPA 2 eval run from its ``latest.pt``: the probe heads (``classifiers``),
    their AdamW moments (``opt``: one optimizer per head, parameters in the head's order, which
    ours share) and the epoch. A V-JEPA 2 run that was evaluation-only has no optimizer state
    to take; the weights and epoch are taken alone then."""
    import torch

    from harness.models.checkpoint_io import classifier_state, load_into, read_checkpoint

    checkpoint = read_checkpoint(path)
    model = run.strategy.unwrap(run.model)
    heads = list(getattr(model.classifier, "heads", [model.classifier]))
    stored = checkpoint.get("classifiers") or []
    if len(stored) != len(heads):
        raise CheckpointError(f"{path} holds {len(stored)} V-JEPA 2 probe heads, this run has {len(heads)}")
    for index, head in enumerate(heads):
        load_into(head, classifier_state(checkpoint, index), f"{path} classifiers[{index}]")
    optimizer_states = checkpoint.get("opt") or []
    if optimizer_states and strategy_spec(run.strategy.name).plain_optimizer_state:
        for head, saved in zip(heads, optimizer_states):
            params = list(head.parameters())
            for index, param in enumerate(params):
                state = saved["state"].get(index)
                if state is not None:
                    run.optimizer.state[param] = {k: v.to(param.device) if torch.is_tensor(v) else v
                                                      for k, v in state.items()}  # fmt: skip
    elif optimizer_states:
        log.warning("%s: AdamW moments are not restored under %s (weights and epoch are)", path, run.strategy.name)
    epoch = int(checkpoint.get("epoch", 0))
    run.state.epoch, run.state.step = epoch, epoch * run.steps_per_epoch
    log.info("resumed V-JEPA 2 eval run %s at epoch %d (%d probe heads)", path, epoch, len(heads))
    return path
