"""Start-up checks of the inputs against each other, before any work: labels against classes, an
epoch long enough for one optimizer step."""

from __future__ import annotations

from harness.config import Config, ConfigError
from harness.data import VideoClipDataset
from harness.data.shard_io import manifest_largest_label


def check_labels(config: Config, num_classes: int, train_set: object | None, val_set: object | None) -> None:
    """Every label of every training and validation source must be a class id below
    ``num_classes``: listings line by line (naming ``file:line``), shard sources by their
    manifest's class histogram. Shard datasets are also told ``num_classes``, so that a sample
    whose label is out of range is quarantined like any bad sample rather than failing mid-run.
    """
    data = config.data
    datasets = {
        "shards" if data.shards else "datasets": train_set,
        "val_shards" if data.val_shards else "val_datasets": val_set,
    }
    hint = "fix the label, or set meta.num_classes to the number of classes"
    for key, dataset in datasets.items():
        if dataset is None:
            continue
        if isinstance(dataset, VideoClipDataset):
            for record in dataset.records:
                if record.label >= num_classes:
                    raise ConfigError(
                        f"data.{key}: {record.where or record.path}: label {record.label} is not one of the "
                        f"{num_classes} classes (ids 0..{num_classes - 1}); {hint}"
                    )
            continue
        dataset.num_classes = num_classes
        for source in getattr(config.data, key):
            largest = manifest_largest_label(source)
            if largest is not None and largest >= num_classes:
                raise ConfigError(
                    f"data.{key}: {source}: its class histogram has samples of class {largest}, but the run "
                    f"has {num_classes} classes (ids 0..{num_classes - 1}); {hint}"
                )


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
