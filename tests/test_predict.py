"""harness.predict on real videos: the evaluation's numbers, names, windows, shards, bad inputs, ranks."""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.data.listing import read_listing
from harness.evaluate.cli import main as evaluate_main
from harness.export.writing import export
from harness.predict.cli import main
from tests.deadline import time_left

REPO = Path(__file__).resolve().parent.parent
NAMES = ["right", "left", "down", "up"]


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_predictions_equal_the_evaluation_and_name_the_classes(trained_run, demo_root, tmp_path, capsys):
    out = tmp_path / "eval"
    code = evaluate_main(["--config", str(trained_run / "config.yaml"), "--checkpoint", str(trained_run),
                          "--out", str(out)])  # fmt: skip
    assert code == 0
    evaluated = {row["video"]: row for row in read_csv(out / "predictions.csv")}
    capsys.readouterr()
    assert (
        main([str(trained_run), str(demo_root / "val.csv"), "--output", str(tmp_path / "p.csv"), "--workers", "0"]) == 0
    )
    printed = capsys.readouterr().out
    rows = read_csv(tmp_path / "p.csv")
    assert [row["video"] for row in rows] == [record.path for record in read_listing(demo_root / "val.csv")]
    for row in rows:
        reference = evaluated[row["video"]]
        assert row["pred1"] == reference["pred1"] and row["name1"] == NAMES[int(row["pred1"])]
        assert float(row["prob1"]) == pytest.approx(float(reference["score1"]), abs=1e-5)
        assert row["error"] == ""
    assert f"{rows[0]['video']}: {rows[0]['name1']} " in printed and "predicted 8 videos, 0 unreadable" in printed


@pytest.mark.parametrize("form", ["safetensors", "hf"])
def test_exported_models_predict_the_same(trained_run, demo_root, tmp_path, form):
    export(trained_run, tmp_path / "model", form)
    args = [str(demo_root / "val"), "--workers", "0", "--no-progress"]
    assert main([str(trained_run), *args, "--output", str(tmp_path / "run.csv")]) == 0
    assert main([str(tmp_path / "model"), *args, "--output", str(tmp_path / "exported.csv")]) == 0
    for a, b in zip(read_csv(tmp_path / "run.csv"), read_csv(tmp_path / "exported.csv"), strict=True):
        assert a["video"] == b["video"] and a["name1"] == b["name1"]
        assert float(a["prob1"]) == pytest.approx(float(b["prob1"]), abs=1e-4)


def test_folders_recursive_with_an_unreadable_video_and_nothing_readable(trained_run, demo_root, tmp_path, capsys):
    folder = tmp_path / "new" / "nested"
    folder.mkdir(parents=True)
    shutil.copy(demo_root / "val" / "left_000.mp4", folder / "a.mp4")
    (tmp_path / "new" / "broken.mp4").write_bytes(b"not a video")
    (tmp_path / "new" / "notes.txt").write_text("ignored: not a video extension")
    assert main([str(trained_run), str(tmp_path / "new"), "--output", str(tmp_path / "p.jsonl"), "--workers", "1"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [Path(r["video"]).name for r in rows] == ["broken.mp4", "a.mp4"], "input order: sorted paths"
    assert rows[0]["error"] and rows[0]["top"] == []
    assert rows[1]["error"] is None and [t["name"] for t in rows[1]["top"]] and len(rows[1]["top"]) == 4
    assert "ERROR" in capsys.readouterr().out
    assert main([str(trained_run), str(tmp_path / "new" / "broken.mp4")]) == 2, "nothing could be predicted"
    assert "run failed: nothing could be predicted" in capsys.readouterr().err


def test_windows_of_a_long_video_and_its_aggregate(trained_run, video_dir, tmp_path):
    video = video_dir / "long_30fps.mp4"  # 120 frames at 30 fps: 4 s
    code = main([str(trained_run), str(video), "--window-seconds", "1.5", "--stride-seconds", "1", "--workers", "0",
                 "--output", str(tmp_path / "w.csv")])  # fmt: skip
    assert code == 0
    rows = read_csv(tmp_path / "w.csv")
    assert [r["window"] for r in rows] == ["0", "1", "2", "3", "all"]
    assert [(float(r["start_s"]), float(r["end_s"])) for r in rows] == [(0, 1.5), (1, 2.5), (2, 3.5), (2.5, 4), (0, 4)]
    mean = sum(float(next(p for i in range(1, 5) if (p := r[f"prob{i}"]) and r[f"name{i}"] == rows[-1]["name1"]))
               for r in rows[:-1]) / 4  # fmt: skip
    assert float(rows[-1]["prob1"]) == pytest.approx(mean, abs=1e-5), "the video's row averages its windows"


def test_shard_manifests_are_inputs_too(trained_run, demo_shards, tmp_path):
    manifest = demo_shards / "val" / "manifest.json"
    assert main([str(trained_run), str(manifest), "--output", str(tmp_path / "s.csv"), "--workers", "2"]) == 0
    rows = read_csv(tmp_path / "s.csv")
    expected = json.loads(manifest.read_text())["total_clips"]
    assert len(rows) == expected and all("#" in r["video"] and r["name1"] in NAMES for r in rows)
    shards = [r["video"].split("#")[0] for r in rows]
    assert shards == sorted(shards), "rows in manifest order"


@pytest.mark.slow
def test_two_ranks_split_the_inputs_and_rank_0_merges_them(trained_run, demo_root, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    common = [str(trained_run), str(demo_root / "val"), str(demo_root / "train" / "up_000.mp4"), "--workers", "0",
              "--no-progress"]  # fmt: skip
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "harness.predict"]
    subprocess.run([*torchrun, *common, "--output", str(tmp_path / "two.csv")], env=env, check=True,
                   timeout=time_left(), capture_output=True)  # fmt: skip
    assert main([*common, "--output", str(tmp_path / "one.csv")]) == 0
    one, two = read_csv(tmp_path / "one.csv"), read_csv(tmp_path / "two.csv")
    assert [r["video"] for r in two] == [r["video"] for r in one] and len(one) == 9
    for a, b in zip(one, two):
        assert a["name1"] == b["name1"] and float(a["prob1"]) == pytest.approx(float(b["prob1"]), abs=1e-5)


@pytest.mark.slow
def test_two_ranks_predict_the_windows_of_long_videos_as_one_process(trained_run, video_dir, tmp_path):
    """Windows under torchrun: each video's windows stay on one rank, so its ``window=all`` row
    averages all of them (once), and an unreadable video gets one error row, not one per rank."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    videos = [str(video_dir / name) for name in ("long_30fps.mp4", "not_video.mp4", "medium_25fps.mp4")]
    common = [str(trained_run), *videos, "--workers", "0", "--no-progress", "--window-seconds", "1",
              "--stride-seconds", "0.5"]  # fmt: skip
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "harness.predict"]
    done = subprocess.run([*torchrun, *common, "--output", str(tmp_path / "two.csv")], env=env, timeout=time_left(),
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert main([*common, "--output", str(tmp_path / "one.csv")]) == 0
    one, two = read_csv(tmp_path / "one.csv"), read_csv(tmp_path / "two.csv")
    key = [(r["video"], r["window"]) for r in one]
    assert [(r["video"], r["window"]) for r in two] == key and len(key) == len(set(key))
    assert sum(r["window"] == "all" for r in one) == 3 and sum(bool(r["error"]) for r in one) == 1
    for a, b in zip(one, two):
        assert a["name1"] == b["name1"] and float(a["prob1"] or 0) == pytest.approx(float(b["prob1"] or 0), abs=1e-5)


def test_bfloat16_predictions_stay_close_to_float32(trained_run, demo_root, tmp_path):
    args = [str(trained_run), str(demo_root / "val"), "--workers", "0", "--no-progress"]
    assert main([*args, "--output", str(tmp_path / "fp32.csv")]) == 0
    assert main([*args, "--dtype", "bfloat16", "--output", str(tmp_path / "bf16.csv")]) == 0
    for a, b in zip(read_csv(tmp_path / "fp32.csv"), read_csv(tmp_path / "bf16.csv"), strict=True):
        probabilities = {a[f"name{i}"]: float(a[f"prob{i}"]) for i in range(1, 5)}
        assert abs(probabilities[b["name1"]] - float(b["prob1"])) < 0.03, "bf16 autocast, fp32 softmax"


def test_a_folder_of_images_and_videos_is_predicted(trained_run, demo_root, tmp_path):
    # images in a folder are inputs too: each is a clip of its one frame repeated (the run's 4 frames)
    from tests.images import encode_image, smooth_frame

    folder = tmp_path / "new"
    folder.mkdir()
    shutil.copy(demo_root / "val" / "left_000.mp4", folder / "b.mp4")
    (folder / "a.png").write_bytes(encode_image(smooth_frame(40, 48), "png"))
    (folder / "c.JPG").write_bytes(encode_image(smooth_frame(40, 48, seed=1), "jpg"))
    assert main([str(trained_run), str(folder), "--output", str(tmp_path / "p.jsonl"), "--workers", "0"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [Path(r["video"]).name for r in rows] == ["a.png", "b.mp4", "c.JPG"]
    assert all(r["error"] is None and len(r["top"]) == 4 for r in rows), rows
