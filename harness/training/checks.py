"""Start-up checks of the inputs against each other, before any work: labels against classes, an
epoch long enough for one optimizer step."""

from __future__ import annotations

from harness.config import Config, ConfigError
from harness.data.source import VideoSource
from harness.training.label_sets import LabelSets, align_label_sets, label_set_problem, unexpected_label_sets


def check_labels(config: Config, num_classes: int, train_set: VideoSource | None, val_set: VideoSource | None,
                 sets: LabelSets | None = None) -> None:  # fmt: skip
    """Every label of every training and validation source must be a class id below
    ``num_classes`` (a listing names the ``file:line``, a shard source its manifest's class
    histogram); the sources are then told ``num_classes``, so that a sample whose label is out of
    range is quarantined like any bad sample rather than failing mid-run. A label-set run
    (``sets``) needs one id per set on every line, each below its set's classes."""
    data = config.data
    keys = {
        "shards" if data.shards else "datasets": train_set,
        "val_shards" if data.val_shards else "val_datasets": val_set,
    }
    for key, source in keys.items():
        if source is None:
            continue
        source.multi_label = config.meta.multi_label or sets is not None  # (a label per set: several per line)
        if sets is not None and (problem := label_set_problem(source, sets)):
            raise ConfigError(f"data.{key}: {problem}; fix the label, or give the sets' classes in meta.label_sets")
        if sets is not None:
            align_label_sets(source, sets.names)
        elif problem := unexpected_label_sets(source):
            raise ConfigError(f"data.{key}: {problem}")
        if problem := source.label_problem(num_classes):
            raise ConfigError(f"data.{key}: {problem}; fix the label, or set meta.num_classes to the number of classes")
        source.num_classes = num_classes


def steps_per_epoch(config: Config, loader) -> int:
    """Optimizer steps in an epoch of ``loader`` (this rank's batches over the accumulation steps);
    an epoch too short for a single step is a config error."""
    loader.set_epoch(0)
    batches = len(loader)
    steps = batches // config.optimization.accumulation_steps
    if steps < 1:
        raise ConfigError(
            f"an epoch has {batches} batches of {config.data.batch_size} on this rank, fewer than "
            f"optimization.accumulation_steps={config.optimization.accumulation_steps}: "
            "use a smaller data.batch_size or more data"
        )
    return steps


def check_eval_only(config: Config, val_set: VideoSource | None) -> None:
    """``meta.eval_only`` needs validation data: without it the run would do nothing and end as if
    it had succeeded."""
    if config.meta.eval_only and val_set is None:
        raise ConfigError(
            "meta.eval_only (val_only in a V-JEPA 2 config) is set but data.val_datasets and data.val_shards are "
            "empty: nothing to evaluate; give validation data, or drop meta.eval_only to train"
        )
