"""Saving and restoring a trainer's whole state through the checkpoint manager."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from harness.config import to_dict
from harness.fileio import write_atomic
from harness.training.checkpoint import META_FILE, checkpoint_name, read_checkpoint_meta, resolve_checkpoint

if TYPE_CHECKING:
    from harness.training.trainer import Trainer

log = logging.getLogger("harness.training.trainer")


def resume(trainer: Trainer) -> Path | None:
    """Load ``meta.read_checkpoint``, else the run folder's ``latest`` (when
    ``meta.load_checkpoint``); returns the checkpoint used or None for a fresh start."""
    meta = trainer.config.meta
    if meta.read_checkpoint:
        path = resolve_checkpoint(meta.read_checkpoint)
    elif meta.load_checkpoint:
        path = trainer.checkpoints.find("latest")
    else:
        path = None
    if path is None:
        return None
    check_resumable(path, trainer.strategy)
    extra = trainer.strategy.load_state(path, trainer.model, trainer.optimizer)
    trainer.state = type(trainer.state)(**extra["train_state"])
    trainer.strategy.precision.load_state_dict(extra.get("precision", {}))
    if trainer.ema is not None and extra.get("ema") is not None:
        trainer.ema.load_state_dict(extra["ema"])
    trainer.window.load_state_dict(extra["window"])
    trainer.epoch_sums.load_state_dict(extra["epoch_sums"])
    rank_state = trainer.checkpoints.restore_rank_state(path)
    if rank_state and rank_state.get("data") and hasattr(trainer.train_loader, "load_state_dict"):
        trainer.train_loader.load_state_dict(rank_state["data"])
    _warn_config_changes(trainer, extra.get("config", {}))
    return path


def check_resumable(path: Path, strategy) -> None:
    """Refuse checkpoints this strategy cannot load, with what to do instead."""
    meta = read_checkpoint_meta(path)
    hint = (
        f"consolidate it (python -m harness.consolidate {path} OUT) and start a new run from "
        "OUT/model.safetensors as meta.pretrain_checkpoint, or resume with the saved setting"
    )
    if meta["strategy"] != strategy.name and {meta["strategy"], strategy.name} != {"single", "ddp"}:
        raise RuntimeError(
            f"{path} was written by distributed.strategy={meta['strategy']}, this run uses "
            f"{strategy.name}: the formats differ; {hint}"
        )
    if strategy.name == "deepspeed" and meta["world_size"] != strategy.world_size:
        raise RuntimeError(
            f"{path} is a DeepSpeed checkpoint of {meta['world_size']} ranks and this run has "
            f"{strategy.world_size}: ZeRO partitions do not reshard on load; {hint} (or convert it "
            "with DeepSpeed's ds_to_universal.py and load it as a universal checkpoint)"
        )


def _warn_config_changes(trainer: Trainer, saved: dict) -> None:
    current = to_dict(trainer.config)
    for section, values in saved.items():
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            now = current.get(section, {}).get(key)
            if now != value:
                log.warning("resuming with %s.%s=%r (the checkpoint used %r)", section, key, now, value)


def save(trainer: Trainer, pointers: list[str]) -> Path:
    """Checkpoint everything resumable and point ``pointers`` at it."""
    config, state, strategy = trainer.config, trainer.state, trainer.strategy
    extra = {
        "train_state": dataclasses.asdict(state),
        "precision": strategy.precision.state_dict(),
        "ema": trainer.ema.state_dict() if trainer.ema is not None else None,
        "window": trainer.window.state_dict(),
        "epoch_sums": trainer.epoch_sums.state_dict(),
        "config": to_dict(config),
    }
    # A frozen encoder that came from a file is not saved again (it is reloaded from there).
    trainable_only = not config.meta.finetune_encoder and bool(config.meta.pretrain_checkpoint)
    meta = {
        "strategy": strategy.name,
        "world_size": strategy.world_size,
        "epoch": state.epoch,
        "step": state.step,
        "num_classes": trainer.num_classes,
        "best_head": state.best_head,
        "trainable_only": trainable_only,
        "config": to_dict(config),
    }

    def write(folder: Path) -> None:
        strategy.save_state(folder, trainer.model, trainer.optimizer, extra, trainable_only)
        if strategy.is_main:
            write_atomic(folder / META_FILE, lambda handle: handle.write(json.dumps(meta, indent=2).encode()))

    loader = trainer.train_loader
    data = loader.state_dict() if hasattr(loader, "state_dict") else None
    name = checkpoint_name(state.epoch, state.step)
    return trainer.checkpoints.save(name, write, pointers, rank_state={"data": data})
