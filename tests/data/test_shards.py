"""Streaming shards into ranks: coverage, equal steps, mixing, bad data, exact resume."""

import collections
import io
import tarfile
from pathlib import Path

import pytest
import torch

from harness.data import ClipSpec, EvalTransform, TrainTransform
from harness.data.shard_eval import ShardEvalDataset, ShardEvalLoader
from harness.data.shards import (
    ShardDataset,
    ShardError,
    ShardLoader,
    expand_braces,
    list_shards,
    read_samples,
)

SPEC = ClipSpec(4, frame_step=2)


def train_loader(sources, rank=0, world=2, workers=2, batch=3, steps=None, **kwargs):
    dataset = ShardDataset(sources, SPEC, TrainTransform(32, normalize=False), seed=1, interleave=2, **kwargs)
    dataset.configure(rank, world, max(1, workers))
    steps = steps or dataset.total_samples() // (world * batch)
    return ShardLoader(dataset, batch, steps_per_epoch=steps, num_workers=workers, persistent_workers=workers > 0)


@pytest.fixture(scope="module")
def train_source(demo_shards):
    return [list_shards(str(demo_shards / "train" / "manifest.json"))]


def test_expand_braces():
    assert expand_braces("s-{08..10}.tar") == ["s-08.tar", "s-09.tar", "s-10.tar"]
    assert expand_braces("pipe:cat a{1..2}.tar") == ["pipe:cat a1.tar", "pipe:cat a2.tar"]


PATTERNS = ["s-{08..10}.tar", "a-{000..002}.tar::b-{x,y}.tar", "d/{train,val}-{0..1}.tar",
            "pipe:curl -s http://h/s-{00..01}.tar", "{a,b{1..2}}.tar", "plain.tar"]  # fmt: skip


@pytest.mark.parametrize("pattern", PATTERNS)
def test_patterns_expand_as_webdataset_expands_them(pattern):
    from webdataset.shardlists import expand_urls

    assert expand_braces(pattern) == list(expand_urls(pattern))


def test_two_ranks_two_workers_see_every_sample_once_with_equal_steps(train_source):
    seen = collections.Counter()
    steps = []
    for rank in range(2):
        loader = train_loader(train_source, rank=rank)
        loader.set_epoch(0)
        batches = list(loader)
        steps.append(len(batches))
        seen.update(video for batch in batches for video in batch.videos)
    assert steps == [4, 4], "every rank runs the same number of steps"
    assert len(seen) == 24 and set(seen.values()) == {1}, "every sample exactly once per epoch"


def test_persistent_workers_follow_each_epochs_plan(train_source):
    persistent = train_loader(train_source, workers=2)
    epochs = []
    for epoch in range(2):
        persistent.set_epoch(epoch)
        epochs.append([v for batch in persistent for v in batch.videos])
    for epoch in range(2):
        fresh = train_loader(train_source, workers=2)
        fresh.set_epoch(epoch)
        assert [v for batch in fresh for v in batch.videos] == epochs[epoch]


def test_epochs_reshuffle_and_are_reproducible(train_source):
    def order(epoch):
        loader = train_loader(train_source, workers=0, world=1, batch=4)
        loader.set_epoch(epoch)
        return [v for batch in loader for v in batch.videos]

    assert order(0) == order(0) and order(0) != order(1) and sorted(order(0)) == sorted(order(1))


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_mid_epoch_continues_with_exactly_the_unseen_samples(train_source, workers):
    full = train_loader(train_source, workers=workers)
    full.set_epoch(1)
    reference = list(full)
    partial = train_loader(train_source, workers=workers)
    partial.set_epoch(1)
    iterator = iter(partial)
    first = [next(iterator) for _ in range(3)]
    state = partial.state_dict()
    del iterator
    resumed = train_loader(train_source, workers=workers)
    resumed.load_state_dict(state)
    resumed.set_epoch(1, start=3 * 3)
    rest = list(resumed)
    assert [b.videos for b in first + rest] == [b.videos for b in reference]
    assert all(torch.equal(a.clips, b.clips) for a, b in zip(first + rest, reference)), "same augmentation too"


def test_weights_mix_sources_in_proportion(demo_shards):
    train = list_shards(str(demo_shards / "train" / "manifest.json"))
    val = list_shards(str(demo_shards / "val" / "manifest.json"))
    dataset = ShardDataset([train, val], SPEC, TrainTransform(32), weights=[1, 3], resample=True)
    dataset.configure(0, 1, 1)
    samples = dataset._raw_samples(0, dataset._fresh_state())
    urls = [next(samples)[2] for _ in range(400)]
    share = sum("/val/" in url for url in urls) / len(urls)
    assert share == pytest.approx(0.75, abs=0.06)


def test_fewer_shards_than_streams_is_an_error_with_a_hint_or_resampled(demo_shards):
    val = [list_shards(str(demo_shards / "val" / "manifest.json"))]  # 3 shards
    with pytest.raises(ShardError, match="3 shards for 2 ranks x 2 workers.*shards.resample"):
        train_loader(val)
    loader = train_loader(val, resample=True, steps=5)
    loader.set_epoch(0)
    assert len(list(loader)) == 5, "resampling: no rank runs dry, none hangs"


def sample_members(key: str, video: bytes | None, label: bytes | None) -> list[tuple[str, bytes]]:
    out = []
    if video is not None:
        out.append((f"{key}.mp4", video))
    if label is not None:
        out.append((f"{key}.cls", label))
    return out


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_bad_samples_and_a_truncated_shard_are_skipped_and_quarantined(demo_root, tmp_path):
    videos = sorted((demo_root / "train").glob("*.mp4"))
    good = [p.read_bytes() for p in videos[:8]]
    write_tar(tmp_path / "a.tar", [
        *sample_members("ok0", good[0], b"0"), *sample_members("corrupt", b"garbage", b"1"),
        *sample_members("nolabel", good[1], None), *sample_members("ok1", good[2], b"2"),
    ])  # fmt: skip
    write_tar(tmp_path / "b.tar", [m for i in range(3, 8) for m in sample_members(f"ok{i}", good[i], b"1")])
    with tarfile.open(tmp_path / "b.tar") as tar:
        cut = tar.getmembers()[5].offset_data + 100  # inside the third sample's video
    (tmp_path / "b.tar").write_bytes((tmp_path / "b.tar").read_bytes()[:cut])
    quarantine = tmp_path / "quarantine_r0.txt"
    shards = [*list_shards(str(tmp_path / "a.tar")), *list_shards(str(tmp_path / "b.tar"))]
    dataset = ShardDataset([shards], SPEC, TrainTransform(32, normalize=False),
                           quarantine=quarantine, interleave=2)  # fmt: skip
    dataset.configure(0, 1, 1)
    loader = ShardLoader(dataset, 2, steps_per_epoch=5, num_workers=0)  # more than one pass over both
    loader.set_epoch(0)
    videos = [v for batch in loader for v in batch.videos]
    assert len(videos) == 10 and not any("corrupt" in v or "nolabel" in v for v in videos)
    stats = dataset.stats()
    assert stats["failed"] >= 2 and stats["broken_shards"] >= 1
    lines = quarantine.read_text().splitlines()
    assert any("corrupt" in line for line in lines) and any("no .cls" in line for line in lines)
    assert any("b.tar" in line and "truncated" in line for line in lines)


def test_a_stream_with_nothing_usable_stops_instead_of_reading_forever(tmp_path):
    write_tar(tmp_path / "bad.tar", [m for i in range(6) for m in sample_members(f"x{i}", b"junk", b"0")])
    dataset = ShardDataset([list_shards(str(tmp_path / "bad.tar"))], SPEC, TrainTransform(32))
    dataset.configure(0, 1, 1)
    loader = ShardLoader(dataset, 2, steps_per_epoch=2, num_workers=0)
    loader.set_epoch(0)
    from harness.data.files import TooManyDecodeFailures

    with pytest.raises(TooManyDecodeFailures, match="100 shard samples in a row could not be used"):
        list(loader)
    assert dataset.attempt_counts() == (100, 100), "counted for the run's verdict too"


def test_pipe_sources_stream_too(demo_shards):
    pattern = f"pipe:cat {demo_shards / 'train'}/shard-{{000000..000007}}.tar"
    shards = list_shards(pattern)
    assert len(shards) == 8 and shards[0].samples is None
    loader = train_loader([shards], world=1, workers=0, batch=4, steps=6)
    loader.set_epoch(0)
    assert sorted(v.split("#")[1] for b in loader for v in b.videos) == sorted(
        v.split("#")[1] for b in _all_local(demo_shards) for v in b.videos
    )


def _all_local(demo_shards):
    loader = train_loader([list_shards(str(demo_shards / "train" / "manifest.json"))], world=1, workers=0, batch=4)
    loader.set_epoch(0)
    return list(loader)


def test_validation_shards_count_every_sample_once_over_ranks(demo_shards):
    shards = list_shards(str(demo_shards / "val" / "manifest.json"))
    seen = []
    for rank in range(2):
        dataset = ShardEvalDataset(shards, SPEC, EvalTransform(32, normalize=False))
        dataset.configure(rank, 2)
        seen += [v for batch in ShardEvalLoader(dataset, 3, num_workers=2) for v in batch.videos]
    assert len(seen) == len(set(seen)) == 8


def test_resume_with_other_workers_keeps_the_step_count_and_warns(train_source, caplog):
    partial = train_loader(train_source, workers=2)
    partial.set_epoch(0)
    iterator = iter(partial)
    [next(iterator) for _ in range(3)]
    state = partial.state_dict()
    del iterator
    other = train_loader(train_source, workers=0)
    other.load_state_dict(state)
    with caplog.at_level("WARNING", logger="harness.data.shards"):
        other.set_epoch(0, start=9)
    assert "restarts from the start of the epoch" in caplog.text
    assert len(list(other)) == 4 - 3, "the epoch still has its number of steps"


def test_a_shard_whose_checksum_differs_from_the_manifest_is_quarantined(demo_shards, tmp_path):
    import json
    import shutil

    copy = tmp_path / "val"
    shutil.copytree(demo_shards / "val", copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    tampered = copy / manifest["shards"][1]["name"]
    data = bytearray(tampered.read_bytes())
    data[-600] ^= 0xFF  # inside the tar's end padding: every sample still reads
    tampered.write_bytes(bytes(data))
    quarantine = tmp_path / "quarantine_r0.txt"
    dataset = ShardEvalDataset(list_shards(str(copy / "manifest.json")), SPEC, EvalTransform(32, normalize=False),
                               quarantine=quarantine)  # fmt: skip
    videos = [v for batch in ShardEvalLoader(dataset, 3, num_workers=0) for v in batch.videos]
    assert len(videos) == 5, "checked before it is read: none of the altered shard's 3 samples is used"
    assert dataset.stats()["broken_shards"] == 1 and dataset.attempt_counts() == (8, 3)
    line = quarantine.read_text()
    assert tampered.name in line and "differs from the manifest" in line
    for shard in list_shards(str(demo_shards / "val" / "manifest.json")):  # untouched shards verify
        assert len(list(read_samples(shard.url, sha256=shard.sha256))) == shard.samples


def test_samples_with_labels_outside_the_classes_are_quarantined(demo_root, tmp_path):
    video = sorted((demo_root / "train").glob("*.mp4"))[0].read_bytes()
    write_tar(tmp_path / "a.tar", [
        *sample_members("ok", video, b"1"), *sample_members("big", video, b"7"), *sample_members("neg", video, b"-1"),
    ])  # fmt: skip
    quarantine = tmp_path / "q.txt"
    dataset = ShardEvalDataset(list_shards(str(tmp_path / "a.tar")), SPEC, EvalTransform(32, normalize=False),
                               quarantine=quarantine)  # fmt: skip
    dataset.num_classes = 4
    videos = [v for batch in ShardEvalLoader(dataset, 3, num_workers=0) for v in batch.videos]
    assert [v.split("#")[1] for v in videos] == ["ok"]
    text = quarantine.read_text()
    assert "label 7 is outside the 4 classes" in text and "negative label -1" in text


@pytest.mark.parametrize("content, message", [
    ("{not json", "is not valid JSON"), ('{"shards": 3}', "not a shard manifest"),
    ("[]", "not a shard manifest"),
])  # fmt: skip
def test_a_broken_manifest_names_its_file(tmp_path, content, message):
    (tmp_path / "manifest.json").write_text(content)
    with pytest.raises(ShardError, match=rf"manifest.json:? {message}"):
        list_shards(str(tmp_path / "manifest.json"))
