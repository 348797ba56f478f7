"""Checkpoints of another model, damaged checkpoints, runs that learned nothing, bad labels."""

import math
from pathlib import Path

import pytest
import torch

from harness.config import ConfigError, load_config
from harness.consolidate import cli as consolidate
from harness.core.errors import RunFailed
from harness.models.checkpoint_io import CheckpointError
from harness.training import Trainer, model_parts
from tests.conftest import tiny_overrides


def run(root: Path, folder: Path, *extra: str) -> Trainer:
    trainer = Trainer(load_config(None, tiny_overrides(root, folder, *extra)))
    trainer.fit()
    return trainer


@pytest.fixture(scope="module")
def finished(demo_root, tmp_path_factory) -> Path:
    """A 2-epoch run keeping every epoch's checkpoint (``epoch_0001`` is older than ``latest``)."""
    folder = tmp_path_factory.mktemp("finished") / "run"
    run(demo_root, folder, "meta.save_every_freq=1")
    return folder


@pytest.mark.parametrize("extra, differs", [
    (("model.depth=3",), "model.depth 2 -> 3"),
    (("meta.num_classes=6", "data.class_names=null"), "meta.num_classes 4 -> 6"),
    (("model.model_name=vit_small",), "model.model_name 'vit_tiny' -> 'vit_small'"),
])  # fmt: skip
def test_resuming_another_model_names_the_settings_and_tensors(finished, demo_root, extra, differs):
    config = load_config(None, tiny_overrides(demo_root, finished, "optimization.epochs=3", *extra))
    with pytest.raises(CheckpointError) as caught:
        Trainer(config)
    message = str(caught.value)
    assert "holds another model than this run builds" in message and differs in message
    assert "tensors differ (e.g. " in message and len(message.splitlines()) == 1


def _copy(folder: Path, tmp_path: Path) -> Path:
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(folder, copy)
    return copy


@pytest.mark.parametrize("damage", ["truncate", "garble"])
def test_a_damaged_latest_is_named_with_the_older_complete_checkpoints(finished, demo_root, tmp_path, damage):
    folder = _copy(finished, tmp_path)
    checkpoints = folder / "checkpoints"
    latest = checkpoints / (checkpoints / "latest").read_text().strip()
    older = checkpoints / (checkpoints / "epoch_0001").read_text().strip()
    assert older != latest
    state = latest / "state.pt"
    data = state.read_bytes()
    state.write_bytes(data[: len(data) // 2] if damage == "truncate" else data[:-200] + b"\0" * 200)
    config = load_config(None, tiny_overrides(demo_root, folder, "optimization.epochs=3"))
    with pytest.raises(CheckpointError) as caught:
        Trainer(config)
    message = str(caught.value)
    assert str(latest) in message and f"epoch_0001 -> {older}" in message, message
    if damage == "truncate":
        assert f"state.pt has {len(data) // 2} of the {len(data)} bytes" in message
        assert consolidate.main([str(latest), str(tmp_path / "out")]) == 2, "consolidation refuses it too"
    else:
        assert message.startswith(f"cannot read {latest}")
    # The user decides: resuming from the named checkpoint works.
    chosen = Trainer(load_config(None, [*tiny_overrides(demo_root, folder, "optimization.epochs=3"),
                                        f"meta.read_checkpoint={older}"]))  # fmt: skip
    assert chosen.state.epoch == 1


def test_a_truncated_pretrained_file_is_named(demo_root, tmp_path):
    config = load_config(None, tiny_overrides(demo_root, tmp_path / "run"))
    path = tmp_path / "encoder.pt"
    torch.save({"encoder": model_parts.build_encoder(config).state_dict()}, path)
    path.write_bytes(path.read_bytes()[:5000])
    config = load_config(None, tiny_overrides(demo_root, tmp_path / "run", f"meta.pretrain_checkpoint={path}"))
    with pytest.raises(CheckpointError, match=f"cannot read checkpoint {path}"):
        Trainer(config)


def test_every_step_skipped_is_a_failed_run(demo_root, tmp_path):
    config = load_config(None, tiny_overrides(demo_root, tmp_path / "run"))
    state = {k: torch.full_like(v, math.nan) for k, v in model_parts.build_encoder(config).state_dict().items()}
    torch.save({"encoder": state}, tmp_path / "nan_encoder.pt")
    extra = (f"meta.pretrain_checkpoint={tmp_path / 'nan_encoder.pt'}", "optimization.epochs=1",
             "optimization.max_nonfinite_steps=100")  # fmt: skip
    with pytest.raises(RunFailed, match="every one of the 6 optimizer steps had a NaN/Inf loss"):
        run(demo_root, tmp_path / "run", *extra)
    summary = (tmp_path / "run" / "summary.json").read_text()
    assert '"failed": "every one of the 6' in summary, "the summary says so too"


def test_a_validation_with_no_readable_video_is_a_failed_run(demo_root, tmp_path, bad_videos):
    listing = tmp_path / "val.csv"
    listing.write_text("".join(f"{video} {i % 4}\n" for i, video in enumerate(bad_videos)))
    extra = (f"data.val_datasets=[{listing}]", "optimization.epochs=1", "data.max_failure_fraction=1")
    with pytest.raises(RunFailed, match="validation counted 0 videos"):
        run(demo_root, tmp_path / "run", *extra)
    assert (tmp_path / "run" / "checkpoints" / "latest").is_file(), "what the run did is kept"


def test_validation_labels_are_checked_before_training(demo_root, tmp_path):
    listing = tmp_path / "val.csv"
    lines = (demo_root / "val.csv").read_text().splitlines()
    listing.write_text("\n".join([*lines[:-1], lines[-1].rsplit(" ", 1)[0] + " 4"]) + "\n")
    config = load_config(None, tiny_overrides(demo_root, tmp_path / "run", f"data.val_datasets=[{listing}]"))
    with pytest.raises(ConfigError, match=rf"data.val_datasets: {listing}:{len(lines)}: label 4 is not one of the 4"):
        Trainer(config)


def test_shard_labels_beyond_the_classes_are_refused_at_start_up(demo_root, demo_shards, tmp_path):
    shards = [f"data.shards=[{demo_shards / 'train' / 'manifest.json'}]", "data.datasets=[]",
              f"data.val_shards=[{demo_shards / 'val' / 'manifest.json'}]", "data.val_datasets=[]"]  # fmt: skip
    config = load_config(None, tiny_overrides(demo_root, tmp_path / "run", *shards, "meta.num_classes=3"))
    with pytest.raises(ConfigError, match="data.shards: .*manifest.json: its class histogram has samples of class 3"):
        Trainer(config)
