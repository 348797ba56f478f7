"""harness.prepare on real generated videos: cutting, splitting, manifests, resumability (journal,
crash and resume), parts of the input and their merge, SLURM array tasks."""

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
    import webdataset  # the test extra installs it: only to read our shards with the reference reader

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


# ----------------------------------------------------------------------------- issue 25 part 3: scale, parts, merge
def chunked(demo_root: Path, out: Path, **options) -> dict:
    """The demo dataset packed as it is (fast: no cutting), 24 train and 8 val clips."""
    settings = Settings(shard_samples=options.pop("shard_samples", 3))
    return prepare(demo_root / "train.csv", out, settings, val_input=demo_root / "val.csv", chunked=True,
                   workers=options.pop("workers", 1), **options)  # fmt: skip


def split_content(folder: Path, manifest_name: str = "manifest.json") -> tuple[dict, dict[str, dict[str, bytes]]]:
    """A split's manifest and every sample of its shards, checked against the manifest."""
    manifest = json.loads((folder / manifest_name).read_text())
    samples = {}
    for shard in manifest["shards"]:
        assert hashlib.sha256((folder / shard["name"]).read_bytes()).hexdigest() == shard["sha256"]
        shard_samples = members(folder / shard["name"])
        assert len(shard_samples) == shard["samples"] and not set(shard_samples) & set(samples)
        samples.update(shard_samples)
    return manifest, samples


class Crash(Exception):
    pass


def crash_after(monkeypatch, shards: int) -> None:
    """The next run dies after writing ``shards`` shards (as a killed process would)."""
    from harness.prepare import pack

    real, written = pack.write_shard, []

    def write_shard(*args):
        if len(written) == shards:
            raise Crash("killed")
        written.append(real(*args))
        return written[-1]

    monkeypatch.setattr(pack, "write_shard", write_shard)


def test_a_crash_leaves_a_journal_never_a_complete_manifest_and_the_rerun_resumes(demo_root, tmp_path, monkeypatch):
    from harness.data.shard_io import ShardError, list_shards

    out = tmp_path / "out"
    crash_after(monkeypatch, 3)
    with pytest.raises(Crash):
        chunked(demo_root, out)
    monkeypatch.undo()
    with pytest.raises(ShardError):
        list_shards(str(out / "train" / "manifest.json"))
    journal = [json.loads(line) for line in (out / "train" / "journal.jsonl").read_text().splitlines()]
    assert "run" in journal[0] and [e["name"] for e in journal[1:]] == [f"shard-00000{i}.tar" for i in range(3)]
    assert not list((out / ".staging").glob("*/*/*.mp4")), "ready clips (--chunked) are packed from where they are"
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "train").glob("*.tar")}

    chunked(demo_root, out)
    manifest, samples = split_content(out / "train")
    assert manifest["complete"] and len(list_shards(str(out / "train" / "manifest.json"))) == 8
    assert all((out / "train" / name).stat().st_mtime_ns == stamp for name, stamp in stamps.items()), "kept"
    chunked(demo_root, tmp_path / "reference")
    reference, reference_samples = split_content(tmp_path / "reference" / "train")
    assert manifest["shards"] == reference["shards"] and samples == reference_samples
    assert not (out / "train" / "journal.jsonl").exists() and not (out / ".staging").exists(), "no staging copy left"
    from harness.prepare import run

    monkeypatch.setattr(run, "cut_job", None)  # a rerun of a finished output cuts nothing: it verifies
    chunked(demo_root, out)
    monkeypatch.undo()

    # A shard lost after the run finished: the rerun cuts again; killed meanwhile, the manifest says so.
    (out / "train" / "shard-000005.tar").unlink()
    crash_after(monkeypatch, 0)
    with pytest.raises(Crash):
        chunked(demo_root, out)
    monkeypatch.undo()
    with pytest.raises(ShardError, match="incomplete"):
        list_shards(str(out / "train" / "manifest.json"))
    chunked(demo_root, out)
    assert split_content(out / "train")[0]["shards"] == reference["shards"]


def test_staged_clips_are_deleted_as_their_shards_are_written(class_folders, tmp_path, monkeypatch):
    listing = tmp_path / "list.csv"
    listing.write_text(f"{class_folders / 'left' / 'v0.mp4'} 0\n{class_folders / 'right' / 'v2.mp4'} 1\n")
    settings = Settings(segment_seconds=2, shard_samples=2)
    crash_after(monkeypatch, 2)
    with pytest.raises(Crash):
        prepare(listing, tmp_path / "out", settings, val_fraction=0, workers=1)
    monkeypatch.undo()
    staged = list((tmp_path / "out" / ".staging" / "train").glob("*/*.mp4"))
    # Resumed with another shard plan: the packed clips are gone from the staging folder, so the
    # videos they came from are cut again.
    other = Settings(segment_seconds=2, shard_samples=3)
    report = prepare(listing, tmp_path / "out", other, val_fraction=0, workers=1)
    clips = report["splits"]["train"]["clips"]
    assert clips > 6 and len(staged) == clips - 2 * 2, "all clips but those of the 2 shards written were staged"
    assert not (tmp_path / "out" / ".staging").exists()
    prepare(listing, tmp_path / "reference", other, val_fraction=0, workers=1)
    assert split_content(tmp_path / "out" / "train") == split_content(tmp_path / "reference" / "train")
    assert (class_folders / "left" / "v0.mp4").is_file(), "sources are never touched"


def test_more_parts_than_videos_of_a_split(demo_root, tmp_path):
    from harness.prepare import Part

    for index in range(10):  # 8 validation videos: two parts have none
        chunked(demo_root, tmp_path, part=Part(index, 10))
    empty = [json.loads(p.read_text()) for p in (tmp_path / "val").glob("manifest-*.json")]
    assert len(empty) == 10 and sum(not m["shards"] and m["complete"] for m in empty) == 2
    assert main(["merge", "--output", str(tmp_path)]) == 0
    assert split_content(tmp_path / "val")[0]["total_clips"] == 8
    assert all((demo_root / "train").iterdir()), "ready clips (--chunked) stay where they are"


def test_the_manifest_is_written_once_and_bookkeeping_grows_linearly(demo_root, tmp_path, monkeypatch):
    from harness.prepare import manifest, pack

    written: dict[str, int] = {}
    real_write, real_append = manifest.write_atomic, pack.Journal.append

    def write_atomic(path, write):
        def counted(handle):
            start = handle.tell()
            write(handle)
            written[path.name] = written.get(path.name, 0) + handle.tell() - start

        written[f"{path.name} writes"] = written.get(f"{path.name} writes", 0) + 1
        real_write(path, counted)

    def append(self, entry):
        written["journal"] = written.get("journal", 0) + len(json.dumps(entry)) + 1
        real_append(self, entry)

    monkeypatch.setattr(manifest, "write_atomic", write_atomic)
    monkeypatch.setattr(pack.Journal, "append", append)
    per_shard = {}
    for shard_samples, shards in ((4, 6 + 2), (1, 24 + 8)):
        written.clear()
        chunked(demo_root, tmp_path / f"out{shard_samples}", shard_samples=shard_samples)
        assert written["manifest.json writes"] == 2, "one write per split (train, val)"
        per_shard[shards] = (written["journal"] + written["manifest.json"]) / shards
    # Rewriting the manifest after every shard costs ~n^2/2 entries: 4x the shards would cost ~2.5x
    # per shard here; a journal line per shard and one manifest keep it flat (fixed parts shrink).
    assert per_shard[32] < 1.1 * per_shard[8], per_shard


def test_parts_then_merge_equal_one_run_of_the_whole_input(class_folders, tmp_path):
    from harness.prepare import Part

    settings = Settings(segment_seconds=10, shard_size_mb=0.03)
    whole = prepare(class_folders, tmp_path / "whole", settings, val_fraction=0.25, workers=1)
    parts = tmp_path / "parts"
    reports = [prepare(class_folders, parts, settings, val_fraction=0.25, workers=1, part=Part(i, 2)) for i in (0, 1)]
    assert all(report["splits"]["train"]["clips"] for report in reports), "each part has some of the videos"
    assert not (parts / "train" / "manifest.json").exists() and not (parts / "report.json").exists()
    assert main(["merge", "--output", str(parts)]) == 0
    for split in ("train", "val"):
        one, one_samples = split_content(tmp_path / "whole" / split)
        merged, merged_samples = split_content(parts / split)
        assert merged_samples == one_samples, "the same clips, byte for byte"
        for key in ("total_clips", "class_histogram", "label_map", "multi_label", "source_videos", "settings"):
            assert merged[key] == one[key], key
        assert merged["complete"] and merged["parts"] == 2
        assert {s["name"] for s in merged["shards"]} == {p.name for p in (parts / split).glob("*.tar")}
    report = json.loads((parts / "report.json").read_text())
    assert sorted(map(str, report["skipped"])) == sorted(map(str, whole["skipped"]))
    assert not list(parts.glob(".staging*"))


def test_merge_refuses_missing_unfinished_or_unlike_parts(demo_root, tmp_path, monkeypatch, capsys):
    from harness.prepare import Part

    out = tmp_path / "out"

    def refused(expected: str) -> None:
        capsys.readouterr()
        assert main(["merge", "--output", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and expected in err, err

    out.mkdir()
    refused("holds no parts to merge")
    chunked(demo_root, out, part=Part(0, 2))
    refused("part 1/2 is missing")
    crash_after(monkeypatch, 1)
    with pytest.raises(Crash):
        chunked(demo_root, out, part=Part(1, 2))
    monkeypatch.undo()
    refused("part 1/2 has not finished")
    chunked(demo_root, out, part=Part(1, 2), shard_samples=2)
    refused("part 1/2 was made with other settings (shard_samples 3 -> 2)")
    chunked(demo_root, out, part=Part(1, 2))
    assert main(["merge", "--output", str(out)]) == 0
    names = sorted(p.name for p in (out / "train").glob("shard-0001of0002-*.tar"))
    assert names == [f"shard-0001of0002-00000{i}.tar" for i in range(4)], "the shards of the old plan are gone"
    chunked(demo_root, out, part=Part(2, 3))
    refused("holds parts of 2 and of 3 parts")


def test_part_numbers_from_the_command_line_and_slurm_arrays():
    from harness.core.errors import UserError
    from harness.prepare.parts import Part, parse_part, part_from_environment

    assert parse_part("3/4") == Part(3, 4) and Part(3, 4).shard_name(7) == "shard-0003of0004-000007.tar"
    assert Part().shard_name(7) == "shard-000007.tar" and Part(0, 1).manifest_name == "manifest.json"
    for bad in ("4/4", "-1/4", "1", "a/b", "0/0"):
        with pytest.raises(UserError, match="--part"):
            parse_part(bad)
    assert part_from_environment({}) is None
    assert part_from_environment({"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "4"}) == Part(2, 4)
    one_based = {"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "4"}
    assert part_from_environment(one_based) == Part(3, 4)
    stepped = {"SLURM_ARRAY_TASK_ID": "6", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "6",
               "SLURM_ARRAY_TASK_STEP": "2", "SLURM_ARRAY_TASK_COUNT": "4"}  # fmt: skip
    assert part_from_environment(stepped) == Part(3, 4)
    listed = {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "5",
              "SLURM_ARRAY_TASK_COUNT": "3"}  # --array=1,3,5: not a range  # fmt: skip
    with pytest.raises(UserError, match="not part of a range"):
        part_from_environment(listed)


def test_a_slurm_array_task_prepares_its_part(demo_root, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    common = ["--input", str(demo_root / "train.csv"), "--val-input", str(demo_root / "val.csv"), "--chunked",
              "--output", str(out), "--shard-samples", "3", "--workers", "1"]  # fmt: skip
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
    assert main(common) == 0
    assert "part 1/2" in capsys.readouterr().out
    assert (out / "prepare-0001of0002.json").is_file() and (out / "train" / "manifest-0001of0002.json").is_file()
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "7")  # --array=7-8, no COUNT
    monkeypatch.delenv("SLURM_ARRAY_TASK_COUNT")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "7")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MAX", "8")
    assert main(common) == 0
    assert (out / "train" / "manifest-0000of0002.json").is_file()
    assert main(["merge", "--output", str(out)]) == 0
    merged, samples = split_content(out / "train")
    assert merged["total_clips"] == len(samples) == 24 and split_content(out / "val")[0]["total_clips"] == 8
    assert main([*common, "--part", "0/1"]) == 0, "--part 0/1: the whole input, whatever SLURM says"
    assert split_content(out / "train")[0].get("parts") is None


@pytest.mark.slow
def test_packing_in_parallel_writes_the_same_shards(demo_root, tmp_path):
    chunked(demo_root, tmp_path / "serial", shard_samples=2, workers=1)
    chunked(demo_root, tmp_path / "parallel", shard_samples=2, workers=2)
    for split in ("train", "val"):
        serial = split_content(tmp_path / "serial" / split)
        assert split_content(tmp_path / "parallel" / split) == serial
