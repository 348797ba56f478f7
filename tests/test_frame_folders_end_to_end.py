"""The demo trained on frame folders (the demo's videos as folders of JPEG frames): a run with fps
sampling at the rate the config gives the folders, its evaluation, shards prepared from the folders
and a run on them, predictions on a folder; and a run whose folders have no rate stopping at once
with one line naming a folder."""

import csv
import json
from pathlib import Path

import pytest

from harness import train
from harness.config import load_config
from harness.evaluate.cli import main as evaluate_main
from harness.predict.cli import main as predict_main
from harness.prepare import Settings, prepare
from harness.training import Trainer
from tests.conftest import tiny_overrides
from tests.frame_folders import make_frame_folder_dataset

DEMO = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def demo_overrides(data: Path, folder: Path, *extra: str) -> list[str]:
    """configs/demo.yaml on the frame-folder demo data, 2 short epochs, fps sampling (5 fps from the
    folders' 15: every 3rd frame, the demo's frame_step)."""
    return [f"folder={folder}", f"data.datasets=[{data / 'train.csv'}]", f"data.val_datasets=[{data / 'val.csv'}]",
            f"data.class_names={data / 'classes.txt'}", "data.generate_demo_data=false", "data.fps=5",
            "data.frame_folder_fps=[15]", "data.num_workers=1", "optimization.epochs=2", "optimization.warmup=0",
            "optimization.anneal=1", "logging.progress_bar=false", "logging.level=warning", *extra]  # fmt: skip


@pytest.mark.slow
def test_the_demo_on_frame_folders_trains_evaluates_shards_and_predicts(tmp_path, capsys):
    data = make_frame_folder_dataset(tmp_path / "frames")  # 4 classes, 6 + 2 folders each, 24 frames of 48x64
    run = tmp_path / "run"
    trainer = Trainer(load_config(DEMO, demo_overrides(data, run)))
    trainer.fit()
    assert trainer.state.last_eval["val_count"] == 8, "every validation folder once"
    losses = [float(row["loss"]) for row in read_csv(run / "log_r0.csv")]
    assert len(losses) == 6 and all(loss == loss for loss in losses), "3 steps per epoch, finite"
    assert json.loads((run / "summary.json").read_text())["train_decode_failures"]["all_ranks"]["failed_attempts"] == 0

    assert evaluate_main(["--config", str(run / "config.yaml"), "--checkpoint", str(run), "--out",
                          str(tmp_path / "eval")]) == 0  # fmt: skip
    evaluated = {row["video"]: row for row in read_csv(tmp_path / "eval" / "predictions.csv")}
    assert sorted(evaluated) == sorted(str(data / "val" / p.name) for p in (data / "val").iterdir())

    # predict: the validation folder holds 8 frame folders; the model samples at 5 fps, so it needs their rate
    inputs = [str(run), str(data / "val"), "--frame-folders", "--workers", "0", "--no-progress"]
    assert predict_main([*inputs, "--frame-fps", "15", "--output", str(tmp_path / "p.csv")]) == 0
    rows = read_csv(tmp_path / "p.csv")
    assert [row["video"] for row in rows] == sorted(evaluated) and not any(row["error"] for row in rows)
    for row in rows:
        assert row["pred1"] == evaluated[row["video"]]["pred1"]
        assert float(row["prob1"]) == pytest.approx(float(evaluated[row["video"]]["score1"]), abs=1e-5)
    capsys.readouterr()
    assert predict_main([*inputs, "--output", str(tmp_path / "no_rate.csv")]) == 2
    assert "run failed: nothing could be predicted" in capsys.readouterr().err
    assert all(row["error"].endswith("give --frame-fps, or sample with --frame-step")
               for row in read_csv(tmp_path / "no_rate.csv"))  # fmt: skip

    # embed: the windows of each folder, in seconds at its rate
    from harness.embed import read_index
    from harness.embed.cli import main as embed_main

    assert embed_main([str(run), str(data / "val"), "--frame-folders", "--frame-fps", "15", "--window-seconds", "1",
                       "--output", str(tmp_path / "embedded"), "--workers", "0", "--no-progress"]) == 0  # fmt: skip
    index = read_index(tmp_path / "embedded")
    windows = [(row["window"], float(row["start_s"]), float(row["end_s"])) for row in index[:2]]
    assert windows == [("0", 0.0, 1.0), ("1", 0.6, 1.6)], "15 frames of 24 at 15 fps, the last ending at the end"
    assert len(index) == 16 and not any(row["error"] for row in index), "2 windows of each of the 8 folders"

    # shards: each folder encoded to an mp4 clip at its rate, then a run streams them
    shards = tmp_path / "shards"
    prepare(data / "train.csv", shards, Settings(frame_fps=15, shard_samples=3), val_input=data / "val.csv", workers=1)
    manifests = {split: json.loads((shards / split / "manifest.json").read_text()) for split in ("train", "val")}
    assert [manifests[s]["total_clips"] for s in ("train", "val")] == [24, 8] and manifests["train"]["label_map"]
    from_shards = tmp_path / "run_shards"
    trainer = Trainer(load_config(DEMO, demo_overrides(data, from_shards, "data.datasets=[]", "data.val_datasets=[]",
                                                       f"data.shards=[{shards / 'train' / 'manifest.json'}]",
                                                       f"data.val_shards=[{shards / 'val' / 'manifest.json'}]",
                                                       "data.frame_folder_fps=[]", "optimization.epochs=1",
                                                       "optimization.anneal=0")))  # fmt: skip
    trainer.fit()
    assert trainer.state.last_eval["val_count"] == 8
    assert len(read_csv(from_shards / "log_r0.csv")) == 3


def test_fps_sampling_of_folders_without_a_rate_stops_with_one_line(tmp_path, capsys):
    data = make_frame_folder_dataset(tmp_path / "frames", 4, 1, 1, num_frames=8, size=(32, 32))
    (tmp_path / "empty.yaml").write_text("{}\n")
    argv = ["--config", str(tmp_path / "empty.yaml"), *tiny_overrides(data, tmp_path / "run"), "data.fps=5",
            "data.frame_step=null"]  # fmt: skip
    assert train.main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(lines)
    assert lines[-1].startswith(f"error: {data / 'train'}/") and "data.frame_folder_fps" in lines[-1], lines[-1]
    log = tmp_path / "run" / "log_r0.csv"
    assert not log.exists() or read_csv(log) == [], "no step trained"
