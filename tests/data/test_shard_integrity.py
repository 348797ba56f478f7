"""Shard checksums are verified before a shard's samples are used: an altered shard is never
trained on nor scored, its samples count against data.max_failure_fraction, and unchanged shards
are hashed once, not every epoch."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest

from harness.config import load_config, save_config
from harness.data import ClipSpec, EvalTransform, TrainTransform
from harness.data.shard_eval import ShardEvalDataset, ShardEvalLoader
from harness.data.shards import ShardDataset, ShardLoader, list_shards
from tests.conftest import tiny_overrides

SPEC = ClipSpec(4, frame_step=2)


def altered_copy(demo_shards: Path, folder: Path, split: str, indices: list[int]) -> tuple[Path, list[str]]:
    """A copy of a split whose shards ``indices`` have one byte flipped inside the tar's end padding:
    every sample still reads, only the checksum tells (the worst case). Returns the manifest and the
    altered shards' names."""
    copy = folder / split
    shutil.copytree(demo_shards / split, copy)
    names = [json.loads((copy / "manifest.json").read_text())["shards"][i]["name"] for i in indices]
    for name in names:
        data = bytearray((copy / name).read_bytes())
        data[-600] ^= 0xFF
        (copy / name).write_bytes(bytes(data))
    return copy / "manifest.json", names


def train_loader(manifest: Path, quarantine: Path | None = None, workers: int = 0, batch: int = 4) -> ShardLoader:
    shards = list_shards(str(manifest))
    dataset = ShardDataset([shards], SPEC, TrainTransform(32, normalize=False), seed=1, interleave=2,
                           quarantine=quarantine)  # fmt: skip
    dataset.configure(0, 1, max(1, workers))
    steps = dataset.total_samples() // batch
    return ShardLoader(dataset, batch, steps_per_epoch=steps, num_workers=workers, persistent_workers=workers > 0)


@pytest.mark.parametrize("workers", [0, 2])
def test_no_sample_of_an_altered_shard_reaches_a_batch(demo_shards, tmp_path, workers):
    manifest, (name,) = altered_copy(demo_shards, tmp_path, "train", [2])
    quarantine = tmp_path / "quarantine_r0.txt"
    loader = train_loader(manifest, quarantine, workers)
    loader.set_epoch(0)
    videos = [video for batch in loader for video in batch.videos]
    assert len(videos) == 24, "the stream still yields its quota, from the other shards"
    assert not [video for video in videos if f"/{name}#" in video], "nothing of the altered shard is trained on"
    stats = loader.dataset.stats()
    assert stats["broken_shards"] >= 1 and stats["failed"] >= 3, "its 3 samples count as unusable"
    assert stats["attempts"] == 24 + stats["failed"], "and as tried"
    lines = quarantine.read_text().splitlines()
    assert lines and all(line.startswith(str(manifest.parent / name)) for line in lines)
    assert "differs from the manifest" in lines[0]


def test_an_altered_validation_shard_counts_as_unusable_not_in_the_scores(demo_shards, tmp_path):
    manifest, (name,) = altered_copy(demo_shards, tmp_path, "val", [1])
    quarantine = tmp_path / "quarantine_r0.txt"
    dataset = ShardEvalDataset(list_shards(str(manifest)), SPEC, EvalTransform(32, normalize=False),
                               quarantine=quarantine)  # fmt: skip
    videos = [v for batch in ShardEvalLoader(dataset, 3, num_workers=2) for v in batch.videos]
    assert len(videos) == 5 and not [v for v in videos if f"/{name}#" in v], "8 clips less the shard's 3"
    assert dataset.attempt_counts() == (8, 3), "its clips count as tried and unusable for validation's verdict"
    assert name in quarantine.read_text() and "differs from the manifest" in quarantine.read_text()
    again = [v for batch in ShardEvalLoader(dataset, 3, num_workers=2) for v in batch.videos]
    assert again == videos and dataset.attempt_counts() == (16, 6), "every evaluation the same"
    assert int(dataset.verdicts.hashed) == 3, "the next evaluation's workers hash nothing again"


def test_unchanged_shards_are_hashed_once_and_a_changed_one_again(demo_shards, tmp_path):
    manifest, _ = altered_copy(demo_shards, tmp_path, "train", [])
    loader = train_loader(manifest, workers=2)
    verdicts = loader.dataset.verdicts
    for epoch in range(3):  # each epoch deals the shards to the other worker (shared verdicts)
        loader.set_epoch(epoch)
        assert len(list(loader)) == 6
    assert int(verdicts.hashed) == 8, "8 shards hashed once over 3 epochs, 2 workers"
    shard = manifest.parent / "shard-000003.tar"
    os.utime(shard, ns=(shard.stat().st_atime_ns, shard.stat().st_mtime_ns + 10**9))  # touched, same bytes
    altered = manifest.parent / "shard-000005.tar"
    data = bytearray(altered.read_bytes())
    data[-600] ^= 0xFF
    altered.write_bytes(bytes(data))  # altered after it verified: the new mtime makes it checked again
    loader.set_epoch(3)
    videos = [video for batch in loader for video in batch.videos]
    assert int(verdicts.hashed) == 10, "only the two changed files are hashed again"
    assert len(videos) == 24 and not [v for v in videos if "/shard-000005.tar#" in v]
    assert loader.dataset.stats()["broken_shards"] >= 1


def test_a_resumed_stream_drops_an_open_shard_altered_since_the_checkpoint(demo_shards, tmp_path):
    manifest, (name,) = altered_copy(demo_shards, tmp_path, "train", [4])
    dataset = train_loader(manifest).dataset
    altered = next(i for i, shard in enumerate(dataset.sources[0]) if shard.url.endswith(name))
    position = next(p for p in range(8) if dataset._shard_at(0, 0, p) == altered)
    state = dataset._fresh_state()
    state["sources"][0].update(next=position + 1, open=[[altered, 1]])  # the checkpoint: 1 of its 3 read
    samples = dataset._raw_samples(0, state)
    assert not next(samples)[2].endswith(name), "none of its remaining samples is used"
    assert dataset.attempt_counts() == (2, 2), "they count as tried and unusable"
    assert dataset.stats()["broken_shards"] == 1


def shard_run(demo_root: Path, folder: Path, train: Path, val: Path, *extra: str) -> list[str]:
    """``harness.train`` arguments of a tiny 1-epoch CPU run on shards."""
    shards = ("data.datasets=[]", "data.val_datasets=[]", f"data.shards=[{train}]", f"data.val_shards=[{val}]")
    overrides = tiny_overrides(demo_root, folder, *shards, "data.class_names=null", "optimization.epochs=1", *extra)
    config = folder.parent / f"{folder.name}.yaml"
    save_config(load_config(None, overrides), config)
    return ["--config", str(config)]


def test_seven_of_eight_altered_shards_stop_the_run_with_the_failure_verdict(demo_root, demo_shards, tmp_path, capsys):
    from harness.train import main

    train, names = altered_copy(demo_shards, tmp_path, "train", list(range(7)))
    shard_run_args = shard_run(demo_root, tmp_path / "run", train, demo_shards / "val" / "manifest.json")
    assert main(shard_run_args) == 2
    error = capsys.readouterr().err
    assert "error: training epoch 1: " in error and "more than data.max_failure_fraction=0.01 allows" in error
    quarantined = (tmp_path / "run" / "quarantine_r0.txt").read_text()
    assert {name for name in names if name in quarantined} == set(names)


def test_a_run_never_scores_the_clips_of_an_altered_validation_shard(demo_root, demo_shards, tmp_path):
    from harness.train import main

    val, (name,) = altered_copy(demo_shards, tmp_path, "val", [0])
    shard_run_args = shard_run(demo_root, tmp_path / "run", demo_shards / "train" / "manifest.json", val,
                          "data.max_failure_fraction=0.5")  # fmt: skip
    assert main(shard_run_args) == 0
    (predictions,) = (tmp_path / "run").glob("*predictions.csv")
    with open(predictions, newline="") as handle:
        videos = [row["video"] for row in csv.DictReader(handle)]
    assert len(videos) == 5 and not [v for v in videos if f"/{name}#" in v], "8 clips less the shard's 3"
