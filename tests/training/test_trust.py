"""Runs that must not end in silent nonsense (issue 27, "Trust"): class names that swap, runs that
"finish" having learned nothing, a full disk during a checkpoint, a kill after validation, and an
evaluation racing the trainer's checkpoint rotation."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pytest

from harness.config import ConfigError, load_config, save_config
from harness.core.errors import RunFailed
from harness.models.checkpoint_io import CheckpointError
from harness.train import main as train_main
from harness.training import Trainer
from harness.training.classes import read_class_names, resolve_class_names
from harness.training.state import run_lock
from harness.training.state.checkpoint import FILES_FILE as FILES
from harness.training.state.checkpoint import CheckpointManager, damage, folder_bytes
from tests.conftest import tiny_overrides
from tests.tmpfs import mounted_tmpfs, resize_tmpfs

NAMES = ["right", "left", "down", "up"]  # the demo's classes.txt


def epoch_column(folder: Path) -> list[int]:
    with open(folder / "epochs.csv", newline="", encoding="utf-8") as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


@pytest.fixture(scope="module")
def finished(demo_root, tmp_path_factory) -> Path:
    """A finished 1-epoch tiny run (6 steps)."""
    folder = tmp_path_factory.mktemp("trust") / "run"
    Trainer(load_config(None, tiny_overrides(demo_root, folder, "optimization.epochs=1"))).fit()
    return folder


def train_cli(overrides: list[str], tmp_path: Path) -> int:
    """``python -m harness.train --config <these overrides saved as a file>``, in this process."""
    path = tmp_path / "config.yaml"
    save_config(load_config(None, overrides), path)
    return train_main(["--config", str(path)])


def printed_errors(capsys) -> list[str]:
    """What the command printed on stderr besides its timestamped log lines."""
    return [line for line in capsys.readouterr().err.splitlines() if line and not re.match(r"\d\d:\d\d:\d\d ", line)]


def copy_run(folder: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(folder, copy)
    return copy


# ------------------------------------------------------------------------------- class names
def named_manifest(demo_shards: Path, tmp_path: Path, names: list[str]) -> Path:
    """The demo's training manifest (made from a listing of ids) with a label map of ``names``."""
    manifest = json.loads((demo_shards / "train" / "manifest.json").read_text())
    manifest["label_map"] = {str(i): name for i, name in enumerate(names)}
    manifest["class_histogram"] = dict(zip(names, manifest["class_histogram"].values()))
    path = tmp_path / "named_manifest.json"
    path.write_text(json.dumps(manifest))
    return path


def shard_config(demo_root: Path, tmp_path: Path, manifest: Path, class_names: Path):
    extra = ("data.datasets=[]", f"data.shards=[{manifest}]", f"data.class_names={class_names}")
    return load_config(None, tiny_overrides(demo_root, tmp_path / "run", *extra))


def test_class_names_and_a_manifest_that_disagree_are_refused(demo_root, demo_shards, tmp_path):
    manifest = named_manifest(demo_shards, tmp_path, NAMES)
    swapped = tmp_path / "swapped.txt"
    swapped.write_text("left\nright\ndown\nup\n")
    with pytest.raises(ConfigError) as caught:
        resolve_class_names(shard_config(demo_root, tmp_path, manifest, swapped))
    message = str(caught.value)
    assert str(swapped) in message and str(manifest) in message, message
    assert "class 0: 'left' vs 'right'" in message and len(message.splitlines()) == 1
    # Agreeing sources are fine; a manifest of plain ids names nothing, so the file names the classes.
    assert resolve_class_names(shard_config(demo_root, tmp_path, manifest, demo_root / "classes.txt")) == NAMES
    ids_manifest = demo_shards / "train" / "manifest.json"
    assert resolve_class_names(shard_config(demo_root, tmp_path, ids_manifest, swapped))[:2] == ["left", "right"]


def test_resuming_under_reordered_class_names_is_refused(finished, demo_root, tmp_path):
    folder = copy_run(finished, tmp_path)
    swapped = tmp_path / "classes.txt"
    swapped.write_text("left\nright\ndown\nup\n")
    config = load_config(None, tiny_overrides(demo_root, folder, "optimization.epochs=2",
                                              f"data.class_names={swapped}"))  # fmt: skip
    with pytest.raises(CheckpointError) as caught:
        Trainer(config)
    message = str(caught.value)
    checkpoint = folder / "checkpoints" / (folder / "checkpoints" / "latest").read_text().strip()
    assert str(swapped) in message and str(checkpoint) in message, message
    assert "class 0: 'left' vs 'right'" in message and "start a new run folder" in message
    assert len(message.splitlines()) == 1
    run_lock.release(folder)
    swapped.write_text("\n".join(NAMES) + "\n")  # the same names from another file: resumes
    assert Trainer(load_config(None, tiny_overrides(demo_root, folder, "optimization.epochs=2",
                                                    f"data.class_names={swapped}"))).state.epoch == 1  # fmt: skip


def test_an_empty_class_name_is_refused_naming_the_line(demo_root, tmp_path, capsys):
    text = tmp_path / "classes.txt"
    text.write_text("right\n\nleft\ndown\n\n")
    with pytest.raises(ConfigError, match=f"{text}:2: empty class name"):
        read_class_names(text)
    listed = tmp_path / "classes.json"
    listed.write_text(json.dumps(["right", "", "left", "down"]))
    with pytest.raises(ConfigError, match=f"{listed}: class id 1 has an empty name"):
        read_class_names(listed)
    text.write_text("right\nleft\ndown\nup\n\n")  # blank lines at the end name nothing
    assert read_class_names(text) == NAMES
    text.write_text("right\nleft\n\u200b\nup\n")  # shows nothing either
    assert train_cli(tiny_overrides(demo_root, tmp_path / "run", f"data.class_names={text}"), tmp_path) == 2
    error = printed_errors(capsys)
    assert len(error) == 1 and f"{text}:3: empty class name" in error[0], error


# ------------------------------------------------------------------ "finished", having done nothing
def test_a_run_that_diverges_too_late_to_stop_is_a_failed_run(demo_root, tmp_path):
    folder = tmp_path / "run"
    # 3 steps: the first sends the weights to ~1e30, the 2 others (fewer than max_nonfinite_steps) are skipped.
    extra = ("optimization.lr=1e30", "data.batch_size=8", "optimization.epochs=1")
    trainer = Trainer(load_config(None, tiny_overrides(demo_root, folder, *extra)))
    with pytest.raises(RunFailed, match="the weights diverged: the last 2 optimizer steps had a NaN/Inf loss"):
        trainer.fit()
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["failed"].startswith("the weights diverged") and summary["best_top1"] is None


def test_eval_only_without_validation_data_is_a_config_error(demo_root, tmp_path, capsys):
    overrides = tiny_overrides(demo_root, tmp_path / "run", "meta.eval_only=true", "data.val_datasets=[]")
    assert train_cli(overrides, tmp_path) == 2
    error = printed_errors(capsys)
    assert len(error) == 1 and "meta.eval_only" in error[0] and "nothing to evaluate" in error[0], error


# ------------------------------------------------------------------------------ disk full, kills
@pytest.mark.slow
def test_a_full_disk_during_a_training_checkpoint_is_one_line_keeps_latest_and_resumes(
    finished, demo_root, tmp_path, capsys
):
    """The trainer's own checkpoint writer fills a real tmpfs sized for one and a half checkpoints of
    the same model (``finished``'s): the checkpoint at step 3 fits, the one at step 6 does not (the
    kernel's ENOSPC reaches torch.save, which re-raises it as a RuntimeError). Once space is freed
    (the tmpfs grown) the same command resumes from step 3, as the message says."""
    size = folder_bytes(finished / "checkpoints" / (finished / "checkpoints" / "latest").read_text().strip())
    with mounted_tmpfs(tmp_path / "small", str(size * 3 // 2 + (1 << 20))) as disk:  # 1 MiB: the rest of the run
        folder = disk / "run"
        overrides = tiny_overrides(demo_root, folder, "optimization.epochs=1", "checkpointing.every_steps=3")
        assert train_cli(overrides, tmp_path) == 2
        error = printed_errors(capsys)
        checkpoints = folder / "checkpoints"
        needed = folder_bytes(checkpoints / "e0000_s00000003")
        assert len(error) == 1, error
        expected = f"error: no space left on tmpfs (tmpfs) mounted at {disk} while writing checkpoint e0000_s00000006"
        assert error[0].startswith(f"{expected}: about {needed:,} bytes needed, "), error[0]
        assert "the partial checkpoint was removed and checkpoints/latest (e0000_s00000003) is intact" in error[0]
        assert sorted(p.name for p in checkpoints.iterdir()) == ["e0000_s00000003", "latest"], "no partial folder"
        assert damage(checkpoints / "e0000_s00000003") is None, "the kept checkpoint is complete"
        run_lock.release(folder)  # as the failed process's exit would
        resize_tmpfs(disk, 3 * size)  # space freed
        assert train_cli(overrides, tmp_path) == 0
        assert f"resumed from {checkpoints / 'e0000_s00000003'} at epoch 0, step 3" in capsys.readouterr().err
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["finished"] and summary["steps"] == 6 and summary["checkpoints"]["latest"] == "e0001_s00000006"


class Killed(Exception):
    """Stands for the job being killed."""


def test_a_kill_right_after_validation_leaves_one_epochs_row_per_epoch(demo_root, tmp_path, monkeypatch):
    folder = tmp_path / "run"
    # A checkpoint every 6 steps (one epoch) is taken before the epoch's validation.
    overrides = tiny_overrides(demo_root, folder, "checkpointing.every_steps=6")
    evaluate_epoch = Trainer.evaluate_epoch

    def killed_after(self, epoch, **kwargs):
        evaluate_epoch(self, epoch, **kwargs)
        raise Killed

    monkeypatch.setattr(Trainer, "evaluate_epoch", killed_after)
    with pytest.raises(Killed):
        Trainer(load_config(None, overrides)).fit()
    assert epoch_column(folder) == [0], "the killed run wrote epoch 0's row"
    run_lock.release(folder)
    monkeypatch.setattr(Trainer, "evaluate_epoch", evaluate_epoch)
    resumed = Trainer(load_config(None, overrides))
    assert (resumed.state.epoch, resumed.state.step) == (0, 6), "resumed before the epoch's validation"
    resumed.fit()
    assert epoch_column(folder) == [0, 1]


def test_evaluate_reads_the_newest_checkpoint_when_the_trainer_rotates_it_mid_read(
    finished, tmp_path, monkeypatch, capsys
):
    from harness.evaluate import run as evaluate_run
    from harness.evaluate.cli import main as evaluate_main
    from harness.training.state import resume

    folder = copy_run(finished, tmp_path)
    load_checkpoint, calls = resume.load_checkpoint, []

    def rotated_first(path, *args, **kwargs):
        if not calls:  # the trainer saves a newer checkpoint and deletes this one, as a save does
            skip = shutil.ignore_patterns(FILES)  # the save writes its own
            CheckpointManager(folder).save("e0009_s00000099", lambda into: shutil.copytree(path, into, ignore=skip,
                                           dirs_exist_ok=True), ["latest", "best"])  # fmt: skip
            assert not path.exists()
        calls.append(path)
        return load_checkpoint(path, *args, **kwargs)

    monkeypatch.setattr(evaluate_run, "load_checkpoint", rotated_first)
    out = tmp_path / "out"
    code = evaluate_main(["--config", str(folder / "config.yaml"), "--checkpoint", str(folder), "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert [p.name for p in calls] == ["e0001_s00000006", "e0009_s00000099"]
    assert json.loads((out / "metrics.json").read_text())["checkpoint"].endswith("e0009_s00000099")
