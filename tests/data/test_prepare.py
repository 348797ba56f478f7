"""harness.prepare on real generated videos: cutting, splitting, manifests, resumability."""

import hashlib
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from harness.data.decode import open_video
from harness.data.synthetic import moving_square_frames, write_video
from harness.prepare import Settings, main, prepare


@pytest.fixture(scope="module")
def class_folders(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("classes")
    rng = np.random.default_rng(0)
    for label, name in enumerate(["left", "right"]):
        (root / name).mkdir()
        for index, seconds in enumerate([25, 4, 12, 6]):
            write_video(root / name / f"v{index}.mp4", moving_square_frames(label, seconds * 15, 48, 64, rng), fps=15)
    (root / "left" / "broken.mp4").write_bytes(b"not a video")
    write_video(root / "right" / "tiny.mp4", moving_square_frames(1, 5, 48, 64, rng), fps=15)  # 0.33 s
    return root


def members(path: Path) -> dict[str, dict[str, bytes]]:
    samples: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as tar:
        for member in tar:
            key, extension = member.name.split(".", 1)
            samples.setdefault(key, {})[extension] = tar.extractfile(member).read()
    return samples


def read_split(folder: Path) -> tuple[dict, dict[str, dict[str, bytes]]]:
    manifest = json.loads((folder / "manifest.json").read_text())
    samples = {}
    for shard in manifest["shards"]:
        path = folder / shard["name"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == shard["sha256"]
        shard_samples = members(path)
        assert len(shard_samples) == shard["samples"]
        samples.update(shard_samples)
    return manifest, samples


def test_prepare_from_class_folders(class_folders, tmp_path):
    out = tmp_path / "out"
    report = prepare(class_folders, out, Settings(segment_seconds=10, shard_size_mb=0.03), val_fraction=0.25,
                     workers=2)  # fmt: skip
    skipped = {Path(s["path"]).name: s["reason"] for s in report["skipped"]}
    assert set(skipped) == {"broken.mp4", "tiny.mp4"} and "min-seconds" in skipped["tiny.mp4"]
    train, train_samples = read_split(out / "train")
    val, val_samples = read_split(out / "val")
    sources = {split: {json.loads(s["json"])["source"] for s in samples.values()}
               for split, samples in (("train", train_samples), ("val", val_samples))}  # fmt: skip
    assert sources["train"] and sources["val"] and not sources["train"] & sources["val"], "split by source video"
    assert train["label_map"] == {"0": "left", "1": "right"} and len(train["shards"]) > 1
    assert train["settings"]["cutter"] == "pyav", "auto cuts with PyAV (bench/RESULTS.md)"
    assert train["total_clips"] == len(train_samples)
    labels = [int(s["cls"]) for s in train_samples.values()]
    assert train["class_histogram"] == {"left": labels.count(0), "right": labels.count(1)}
    # 25 s -> 3 segments (10, 10, 5), 12 s -> 2 (10 + 2), 4 s and 6 s kept whole
    clips_per_source = {}
    for sample in [*train_samples.values(), *val_samples.values()]:
        meta = json.loads(sample["json"])
        clips_per_source.setdefault(Path(meta["source"]).name + meta["label_name"], []).append(meta)
        reader = open_video(sample["mp4"], "pyav")
        assert reader.num_frames == meta["frames"] and abs(reader.num_frames / 15 - (meta["end"] - meta["start"])) < 0.2
        reader.close()
    counts = {name: len(clips) for name, clips in clips_per_source.items()}
    assert counts["v0.mp4left"] == 3 and counts["v2.mp4right"] == 2 and counts["v1.mp4left"] == 1

    # A rerun finds everything done: same shards, untouched.
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "train").glob("*.tar")}
    prepare(class_folders, out, Settings(segment_seconds=10, shard_size_mb=0.03), val_fraction=0.25, workers=2)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "train").glob("*.tar")} == stamps
    # A lost shard is rewritten identically; the others stay.
    lost = sorted(stamps)[0]
    (out / "train" / lost).unlink()
    prepare(class_folders, out, Settings(segment_seconds=10, shard_size_mb=0.03), val_fraction=0.25, workers=2)
    again, _ = read_split(out / "train")
    assert again["shards"] == train["shards"]
    assert all((out / "train" / n).stat().st_mtime_ns == t for n, t in stamps.items() if n != lost)


def test_prepare_from_listing_with_reencode(class_folders, tmp_path):
    listing = tmp_path / "list.csv"
    listing.write_text(f"{class_folders / 'left' / 'v0.mp4'} 0\n{class_folders / 'right' / 'v2.mp4'} 1\n")
    code = main(["--input", str(listing), "--output", str(tmp_path / "out"), "--val-fraction", "0",
                 "--fps", "10", "--short-side", "32", "--segment-seconds", "5", "--workers", "1"])  # fmt: skip
    assert code == 0
    manifest, samples = read_split(tmp_path / "out" / "train")
    assert manifest["total_clips"] == 5 + 3  # 25 s -> 5 x 5 s; 12 s -> 5 + 5 + a 2 s remainder (>= 1 s)
    for sample in samples.values():
        meta = json.loads(sample["json"])
        reader = open_video(sample["mp4"], "pyav")
        frame = reader.get_frames([0])
        assert min(frame.shape[1:3]) == 32 and round(reader.fps) == 10
        assert reader.num_frames == meta["frames"] <= 50
        reader.close()


def test_chunked_listing_packs_clips_as_they_are_and_webdataset_reads_them(demo_shards, demo_root):
    manifest, samples = read_split(demo_shards / "train")
    assert manifest["total_clips"] == 24 and [s["samples"] for s in manifest["shards"]] == [3] * 8
    sources = {json.loads(s["json"])["source"] for s in samples.values()}
    originals = {line.split()[0] for line in (demo_root / "train.csv").read_text().splitlines()}
    assert {Path(s).name for s in sources} == {Path(s).name for s in originals}
    webdataset = pytest.importorskip("webdataset", reason="webdataset is in the test extra; installed in CI")
    shards = sorted(str(p) for p in (demo_shards / "train").glob("*.tar"))
    read = list(webdataset.WebDataset(shards, shardshuffle=False, empty_check=False))
    assert len(read) == 24 and all({"mp4", "cls", "json"} <= set(r) for r in read)


@pytest.mark.parametrize("cutter", ["pyav", "ffmpeg"])
def test_both_cutters_reencode_to_the_same_segments(class_folders, tmp_path, cutter):
    if cutter == "ffmpeg" and shutil.which("ffmpeg") is None:
        pytest.skip("the ffmpeg command is not installed (.ci/run installs it)")
    listing = tmp_path / "list.csv"
    listing.write_text(f"{class_folders / 'left' / 'v0.mp4'} 0\n")
    settings = Settings(segment_seconds=5, fps=10, short_side=32, cutter=cutter)
    prepare(listing, tmp_path / "out", settings, val_fraction=0, workers=1)
    manifest, samples = read_split(tmp_path / "out" / "train")
    assert manifest["settings"]["cutter"] == cutter
    spans = []
    for sample in samples.values():
        meta = json.loads(sample["json"])
        reader = open_video(sample["mp4"], "pyav")
        assert reader.num_frames == meta["frames"] == 50 and round(reader.fps) == 10
        assert reader.get_frames([0]).shape[1:3] == (32, 42)  # 48x64 -> short side 32, even width
        reader.close()
        spans.append((meta["start"], meta["end"]))
    assert sorted(spans) == [(5.0 * i, 5.0 * i + 5) for i in range(5)]  # 25 s at 5 s per segment


def test_stream_copy_with_ffmpeg_and_a_corrupt_video_is_reported(class_folders, tmp_path):
    if shutil.which("ffmpeg") is None:
        pytest.skip("the ffmpeg command is not installed (.ci/run installs it)")
    listing = tmp_path / "list.csv"
    listing.write_text(f"{class_folders / 'left' / 'v0.mp4'} 0\n{class_folders / 'left' / 'broken.mp4'} 0\n")
    report = prepare(listing, tmp_path / "out", Settings(segment_seconds=10, cutter="ffmpeg"), val_fraction=0,
                     workers=1)  # fmt: skip
    assert [Path(s["path"]).name for s in report["skipped"]] == ["broken.mp4"]
    manifest, samples = read_split(tmp_path / "out" / "train")
    frames = sorted(json.loads(s["json"])["frames"] for s in samples.values())
    assert sum(frames) == 25 * 15 and len(frames) == 3, "copy keeps every frame, cut near 10 s boundaries"


def test_asking_for_the_ffmpeg_command_without_it_is_a_clear_error(class_folders, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no ffmpeg here
    assert main(["--input", str(class_folders), "--output", str(tmp_path / "out"), "--cutter", "ffmpeg"]) == 2
    assert capsys.readouterr().err.startswith("error: --cutter ffmpeg needs the ffmpeg command")
    assert not (tmp_path / "out").exists(), "nothing started"


def test_rerun_with_other_cut_settings_refuses_or_redoes(class_folders, tmp_path, capsys):
    listing = tmp_path / "list.csv"
    listing.write_text(f"{class_folders / 'left' / 'v0.mp4'} 0\n{class_folders / 'right' / 'v2.mp4'} 1\n")
    out = tmp_path / "out"
    common = ["--input", str(listing), "--output", str(out), "--val-fraction", "0", "--workers", "1"]
    assert main([*common, "--segment-seconds", "10"]) == 0
    first, _ = read_split(out / "train")
    (out / "train" / ".tmp-999-shard-000009.tar").write_bytes(b"half a shard of a killed run")
    assert main([*common, "--segment-seconds", "5"]) == 2
    assert "segment_seconds 10.0 -> 5.0" in capsys.readouterr().err
    assert read_split(out / "train")[0] == first, "the refused run changed nothing"
    assert main([*common, "--segment-seconds", "5", "--overwrite"]) == 0
    redone, _ = read_split(out / "train")
    assert redone["settings"]["segment_seconds"] == 5 and redone["total_clips"] > first["total_clips"]
    assert not list((out / "train").glob(".tmp-*")), "stray temporary shards are cleaned"


def test_no_clip_at_all_fails_and_dropped_videos_are_listed(class_folders, tmp_path, capsys):
    listing = tmp_path / "list.csv"
    listing.write_text(f"{class_folders / 'left' / 'broken.mp4'} 0\n{class_folders / 'right' / 'tiny.mp4'} 1\n")
    code = main(["--input", str(listing), "--output", str(tmp_path / "out"), "--val-fraction", "0", "--workers", "1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "error: no clips were produced" in err and "report.json" in err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert sorted(Path(s["path"]).name for s in report["skipped"]) == ["broken.mp4", "tiny.mp4"]
    listing.write_text(f"{class_folders / 'left' / 'v1.mp4'} 0\n{class_folders / 'right' / 'tiny.mp4'} 1\n")
    code = main(["--input", str(listing), "--output", str(tmp_path / "out2"), "--val-fraction", "0", "--workers", "1"])
    assert code == 0
    err = capsys.readouterr().err
    assert "WARNING: 1 videos were dropped" in err and "tiny.mp4: " in err
