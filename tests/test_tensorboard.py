"""TensorBoard (``logging.tensorboard``): the event files of a real run, read back with
TensorBoard's own reader, hold the scalars, the confusion image per evaluation and the hparams."""

import csv

import pytest

from harness.config import load_config
from harness.training import Trainer
from tests.conftest import tiny_overrides


def test_a_run_writes_scalars_confusion_images_and_hparams(demo_root, tmp_path):
    from tensorboard.backend.event_processing import event_accumulator as accumulator_module  # a dependency

    folder = tmp_path / "run"
    config = load_config(None, tiny_overrides(demo_root, folder, "logging.tensorboard=true", "optimization.ipe=2"))
    Trainer(config).fit()
    events = accumulator_module.EventAccumulator(str(folder / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    tags = events.Tags()
    assert {"train/loss", "train/lr", "val/top1", "val/top5", "epoch/train_loss"} <= set(tags["scalars"])
    with open(folder / "epochs.csv", newline="") as handle:
        epochs = list(csv.DictReader(handle))
    top1 = [event.value for event in events.Scalars("val/top1")]
    assert top1 == pytest.approx([float(row["val_top1"]) for row in epochs])  # the same numbers as the CSV
    with open(folder / "log_r0.csv", newline="") as handle:
        losses = [float(row["loss"]) for row in csv.DictReader(handle)]
    assert [event.value for event in events.Scalars("train/loss")] == pytest.approx(losses)
    images = events.Images("val/confusion")
    assert len(images) == len(epochs) == 2 and images[0].width > 100
    best = [event.value for event in events.Scalars("hparams/best_top1")]  # the HPARAMS tab's metric
    assert best == [pytest.approx(max(top1))]
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(events.PluginTagToContent("hparams"))
    assert "config/text_summary" in tags["tensors"]


def test_off_by_default_and_only_on_rank_zero(demo_root, tmp_path):
    overrides = tiny_overrides(demo_root, tmp_path / "run", "optimization.epochs=1", "optimization.ipe=1")
    config = load_config(None, overrides)
    trainer = Trainer(config)
    assert not any(type(sink).__name__ == "TensorBoardSink" for sink in trainer.dashboards)
    assert not (tmp_path / "run" / "tensorboard").exists()
