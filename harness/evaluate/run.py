"""The work behind ``python -m harness.evaluate`` (:mod:`harness.evaluate.cli`): the model built by
the composition root (:func:`harness.training.assemble.prepare_model`: under FSDP2 and ZeRO-3 on
the meta device, each rank materialising only its shards, as in training), the checkpoint loaded,
the deterministic multi-view evaluation run, metrics and predictions written."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from harness.config import Config, ConfigError
from harness.config.arguments import log_config_notes
from harness.core.errors import RunFailed
from harness.models.checkpoint_io import CheckpointError, classifier_state, read_checkpoint
from harness.training import assemble
from harness.training.checks import check_labels
from harness.training.classes import display_names, resolve_class_names
from harness.training.data_parts import build_val_dataset, build_val_loader
from harness.training.evaluation import evaluate, write_eval_artefacts
from harness.training.label_sets import LabelSets, resolve_label_sets
from harness.training.objective import LabelSetObjective, MultiLabelObjective
from harness.training.state.checkpoint import read_checkpoint_meta, resolve_checkpoint
from harness.training.state.resume import load_checkpoint
from harness.training.tracking.logger import setup_console

log = logging.getLogger("harness.evaluate")


def evaluate_checkpoint(config: Config, pointer: str, out: str | None) -> int:
    """Evaluate the checkpoint ``pointer`` names (folder, pointer, run folder or probe file) on the
    config's validation data; write ``metrics.json``, predictions and the confusion matrix into
    ``out`` (default ``<folder>/eval_<checkpoint>``). Returns the exit code."""
    strategy = assemble.build_strategy_from_config(config)
    setup_console(config.logging.level, strategy.is_main)
    if strategy.is_main:
        log_config_notes(config, log)
    checkpoint, (num_classes, names, sets) = _read_newest(pointer, lambda path: _classes(path, config))
    val_set = build_val_dataset(config, names if sets is None else None)
    if val_set is None:
        raise ConfigError("data.val_datasets (or data.val_shards) is empty: nothing to evaluate")
    names = display_names(names, num_classes)
    check_labels(config, num_classes, None, val_set, sets)
    if not checkpoint.is_dir():  # a probe file: its heads are loaded as the model is built, before sharding
        config = dataclasses.replace(
            config, meta=dataclasses.replace(config.meta, classifier_checkpoint=str(checkpoint))
        )
    model, _ = assemble.prepare_model(config, strategy, num_classes)  # sharded as in training
    if checkpoint.is_dir():

        def load(path: Path) -> dict:
            return load_checkpoint(path, strategy, model, None, config, num_classes)

        checkpoint, _ = _read_newest(pointer, load, checkpoint)
    loader = build_val_loader(config, strategy, val_set)
    objective = MultiLabelObjective(num_classes) if config.meta.multi_label else None  # BCE and mAP
    if sets is not None:  # the checkpoint's sets: each scored on its own slice of the logits
        metric = config.meta.label_set_metric if config.meta.label_set_metric in sets.names else "mean"
        objective = LabelSetObjective(sets, metric=metric)
    result, accumulator = evaluate(model, loader, strategy, num_classes, config.logging.progress_bar,
                                   num_views=config.data.num_views, objective=objective)  # fmt: skip
    folder = Path(out) if out else Path(config.folder) / f"eval_{checkpoint.name}"
    if strategy.is_main:
        folder.mkdir(parents=True, exist_ok=True)
    strategy.barrier()
    paths, _ = write_eval_artefacts(result, accumulator, strategy, folder, "", names)
    if strategy.is_main:
        metrics = {**result.as_dict(), "checkpoint": str(checkpoint), "unreadable_videos": val_set.stats()["failed"]}
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
        print(f"{result.describe()} over {result.count} videos\n"
              f"wrote {folder / 'metrics.json'}, " + ", ".join(str(p) for p in paths))  # fmt: skip
    strategy.close()
    if result.count == 0:
        raise RunFailed(f"0 videos were evaluated: every one was unreadable (see the warnings above); wrote {folder}")
    return 0


def _classes(checkpoint: Path, config) -> tuple[int, list[str] | None, LabelSets | None]:
    """Number of classes, their names and the label sets: the checkpoint's, else the config's (a
    probe file's label sets need every set's classes in ``meta.label_sets``)."""
    if checkpoint.is_dir():
        meta = read_checkpoint_meta(checkpoint)
        sets = LabelSets.from_dict(meta["label_sets"]) if meta.get("label_sets") else None
        return int(meta["num_classes"]), meta.get("class_names") or resolve_class_names(config), sets
    count = int(classifier_state(read_checkpoint(checkpoint))["linear.weight"].shape[0])
    if not config.meta.label_sets:
        return count, resolve_class_names(config), None
    sets, names = resolve_label_sets(config, None)
    if sets.total != count:
        raise ConfigError(f"meta.label_sets: {sets.describe()} make {sets.total} outputs but {checkpoint} has "
                          f"{count}: give each set's classes as the probe was trained")  # fmt: skip
    return count, names, sets


def _read_newest(pointer: str, read, checkpoint: Path | None = None, tries: int = 3):
    """``(folder, read(folder))`` for the checkpoint ``pointer`` names (``checkpoint``: the one it
    named before). A running trainer may replace that checkpoint and delete it mid-read: when the
    read fails and the pointer names another checkpoint by then, read the newer one."""
    checkpoint = checkpoint or resolve_checkpoint(pointer)
    for _ in range(tries - 1):
        try:
            return checkpoint, read(checkpoint)
        except CheckpointError:
            newest = resolve_checkpoint(pointer)
            if newest == checkpoint:
                raise
            log.warning("%s was replaced by %s while being read (the run is training): reading that", checkpoint,
                        newest)  # fmt: skip
            checkpoint = newest
    return checkpoint, read(checkpoint)
