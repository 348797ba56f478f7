"""Metrics, W&B (offline, read back from its run file), NaN handling, signals, report."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.config import load_config, save_config
from harness.core.errors import RunFailed
from harness.report.cli import main as report_main
from harness.report.page import charts, smooth
from harness.training import Trainer
from harness.training.tracking.observability import StallDetector
from tests.conftest import tiny_overrides
from tests.wandb_records import read_run

REPO = Path(__file__).resolve().parent.parent


def rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_step_metrics_and_report(demo_root, tmp_path):
    folder = tmp_path / "run"
    Trainer(load_config(None, tiny_overrides(demo_root, folder, "optimization.epochs=1"))).fit()
    log = rows(folder / "log_r0.csv")
    for row in log:
        assert float(row["clips_per_s"]) > 0 and float(row["tokens_per_s"]) == pytest.approx(
            float(row["clips_per_s"]) * 8
        )  # 4 frames / tubelet 2 x (32 / 16)^2 = 8 tokens per clip
        assert 0 < float(row["mfu"]) <= 1 and 0 <= float(row["data_wait"]) <= 1
        assert float(row["memory_gb"]) > 0 and row["decode_failures"] == "0" and row["skipped_steps"] == "0"
    assert report_main([str(folder)]) == 0
    for name in ("loss", "accuracy", "schedule", "throughput", "confusion", "per_class"):
        assert (folder / "report" / f"{name}.png").stat().st_size > 1000
    page = (folder / "report" / "index.html").read_text()
    assert all(f'src="{name}.png"' in page for name in ("loss", "accuracy", "confusion", "per_class"))
    assert "best_top1" in page and "val_macro_f1" in page, "the summary and the last epoch's metrics"
    check_charts(charts(folder))
    per_class = rows(folder / "best_per_class.csv")
    assert [row["class"] for row in per_class] == ["right", "left", "down", "up"]
    assert sum(int(row["support"]) for row in per_class) == 8
    epoch = rows(folder / "epochs.csv")[0]
    present = [float(row["f1"]) for row in per_class if int(row["support"])]
    assert float(epoch["val_macro_f1"]) == pytest.approx(sum(present) / len(present), abs=1e-6)


def check_charts(figures: dict) -> None:
    """Every axis labelled, every line in the figure's one legend, the legend outside the data."""
    for name, figure in figures.items():
        figure.canvas.draw()
        (legend,) = figure.legends
        listed = [text.get_text() for text in legend.get_texts()]
        for axis in figure.axes:
            assert axis.get_xlabel() or axis is not figure.axes[0], name
            assert axis.get_ylabel(), f"{name}: an unlabelled y axis"
            lines = [line.get_label() for line in axis.get_lines()]
            assert set(lines) <= set(listed), f"{name}: {set(lines) - set(listed)} not in the legend"
            assert not legend.get_window_extent().overlaps(axis.get_window_extent()), f"{name}: legend over the data"
    raw = [line for line in figures["loss"].axes[0].get_lines() if line.get_label().endswith("(raw)")]
    assert raw and raw[0].get_alpha() < 0.5, "the raw curve drawn faint under the smoothed one"


def test_smoothing_is_a_debiased_moving_average_that_skips_gaps():
    values = np.array([1.0, np.nan, 3.0, 3.0])
    out = smooth(values, weight=0.5)
    assert out[0] == 1.0 and out[1] == 1.0  # debiased: the first value is itself
    assert out[2] == pytest.approx((0.25 * 1 + 0.5 * 3) / 0.75)
    assert np.all(np.diff(out[1:]) > 0) and out[-1] < 3.0


def test_stall_detector_warns_once_per_epoch(caplog):
    detector = StallDetector(threshold=0.3, num_workers=2, patience=2)
    with caplog.at_level("WARNING", logger="harness.training.tracking.observability"):
        warned = [detector.update(share, epoch=0) for share in (0.5, 0.1, 0.6, 0.7, 0.8)]
        assert warned == [False, False, False, True, False]
        assert detector.update(0.9, epoch=1) is True
    assert "data.num_workers=2" in caplog.text


def test_wandb_offline_run_holds_config_and_metrics_and_resume_continues_it(demo_root, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))  # W&B's default staging and cache folders are under it
    for name in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR"):
        monkeypatch.setenv(name, "")
    folder = tmp_path / "run"
    extra = ("logging.wandb.enabled=true", "logging.wandb.project=test", "logging.wandb.tags=[ci]",
             "logging.wandb.thumbnails=2", "logging.wandb.log_model=true")  # fmt: skip
    first = Trainer(load_config(None, tiny_overrides(demo_root, folder, *extra, "optimization.epochs=1")))
    first.fit()
    run_id = first.state.wandb_run_id
    files = list((folder / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert len(files) == 1, "offline mode without an API key"
    run = read_run(files[0])
    assert run["run_id"] == run_id
    assert run["config"]["optimization"]["lr"] == 0.001 and run["config"]["model"]["model_name"] == "vit_tiny"
    steps = [r for r in run["history"] if "train/loss" in r]
    assert [r["_step"] for r in steps] == list(range(1, 7))
    assert all(r["train/clips_per_s"] > 0 and "train/mfu" in r for r in steps)
    epochs = [r for r in run["history"] if "val/top1" in r]
    assert len(epochs) == 1 and epochs[0]["val/count"] == 8
    assert epochs[0]["val/confusion_table/_type"] == "table-file", "W&B's confusion-matrix plot"
    table = files[0].parent / "files" / epochs[0]["val/confusion_table/path"]
    cells = json.loads(table.read_text())
    assert cells["columns"] == ["Actual", "Predicted", "nPredictions"]
    assert {row[0] for row in cells["data"]} == {"right", "left", "down", "up"}, "class names, not ids"
    assert sum(row[2] for row in cells["data"]) == 8
    assert run["metrics"]["val/top1"] == ["max"] and run["metrics"]["val/loss"] == ["min"], "summary: the best"
    # thumbnails and the model artifact are staged inside the run folder, nothing under HOME
    assert not [p for p in home.rglob("*") if p.is_file() and "wandb" in str(p.relative_to(home))]
    staged = [p.read_bytes() for p in (folder / "wandb" / "data").rglob("*") if p.is_file()]
    assert sum(blob.startswith(b"\x89PNG") for blob in staged) == 2, "one PNG thumbnail per logged prediction"
    assert (folder / "best_model" / "model.safetensors").read_bytes() in staged, "the best model, staged"
    artifacts = [r for r in run["artifacts"] if r["type"] == "model"]
    assert [(a["name"], sorted(a["aliases"])) for a in artifacts] == [
        (f"model-{run_id}", ["best", "epoch-1", "latest"])
    ]

    second = Trainer(load_config(None, tiny_overrides(demo_root, folder, *extra, "optimization.epochs=2")))
    assert second.state.wandb_run_id == run_id, "the resumed job continues the same W&B run"
    second.fit()
    again = sorted((folder / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert len(again) == 2
    later = read_run(again[-1])
    assert [r["_step"] for r in later["history"] if "train/loss" in r] == list(range(7, 13))

    third = Trainer(load_config(None, tiny_overrides(demo_root, folder, *extra, "optimization.epochs=2")))
    third.fit()  # finished: nothing to do
    assert len(list((folder / "wandb").glob("offline-run-*"))) == 2, "a finished run rerun starts no W&B session"


def test_nonfinite_losses_are_skipped_then_stop_with_the_checkpoint_intact(demo_root, tmp_path):
    folder = tmp_path / "run"
    Trainer(load_config(None, tiny_overrides(demo_root, folder, "optimization.epochs=1"))).fit()
    good = (folder / "checkpoints" / "latest").read_text()
    blowup = ("optimization.epochs=3", "optimization.lr=1e30", "optimization.clip_grad=null",
              "optimization.max_nonfinite_steps=3")  # fmt: skip
    blowup = tiny_overrides(demo_root, folder, *blowup)
    trainer = Trainer(load_config(None, blowup))
    with pytest.raises(RunFailed, match="3 steps in a row had a NaN/Inf loss"):
        trainer.fit()
    assert trainer.state.skipped_steps == 3
    assert (folder / "checkpoints" / "latest").read_text() == good, "nothing saved after the last good step"
    skipped = [int(r["skipped_steps"]) for r in rows(folder / "log_r0.csv")]
    assert skipped[-1] >= 1


@pytest.mark.slow
def test_sigterm_saves_stops_cleanly_and_the_rerun_continues_exactly(demo_root, tmp_path):
    def config(name):
        overrides = tiny_overrides(demo_root, tmp_path / name, "data.batch_size=2", "optimization.epochs=2",
                                   "data.crop_size=48", "model.depth=3", "logging.log_every=2")  # fmt: skip
        path = tmp_path / f"{name}.yaml"
        save_config(load_config(None, overrides), path)
        return str(path)

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "harness.train", "--config"]
    subprocess.run([*command, config("reference")], cwd=REPO, env=env, check=True, capture_output=True)
    process = subprocess.Popen([*command, config("stopped")], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "stopped" / "log_r0.csv"
    deadline = time.time() + 120
    while (not log.exists() or len(log.read_text().splitlines()) < 5) and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr[-2000:]
    summary = json.loads((tmp_path / "stopped" / "summary.json").read_text())
    assert summary["stopped_by"] == "SIGTERM" and not summary["finished"]
    assert (tmp_path / "stopped" / "checkpoints" / "latest").read_text().strip().endswith(f"{summary['steps']:08d}")
    subprocess.run([*command, config("stopped")], cwd=REPO, env=env, check=True, capture_output=True)
    keys = ("step", "loss", "acc1", "lr")
    reference = [{k: r[k] for k in keys} for r in rows(tmp_path / "reference" / "log_r0.csv")]
    assert [{k: r[k] for k in keys} for r in rows(log)] == reference
    assert json.loads((tmp_path / "stopped" / "summary.json").read_text())["finished"]


def test_an_impossible_mfu_is_left_out_with_one_warning(caplog):
    from harness.training.tracking import observability

    observability._WARNED_MFU.clear()
    assert observability.checked_mfu(5e11, 1e12) == 0.5
    assert observability.checked_mfu(5e11, None) is None
    with caplog.at_level("WARNING"):
        assert observability.checked_mfu(1.5e12, 1e12) is None
        assert observability.checked_mfu(2e12, 1e12) is None
    assert sum("MFU would read 150%" in r.message for r in caplog.records) == 1


def test_a_cpu_peak_is_measured_once_per_dtype_and_within_its_budget(monkeypatch):
    """Every Trainer asks for the peak: measured once per process and dtype; the measurement stops
    within its budget whatever the dtype (emulated bf16/fp16 took 26 s at a fixed size)."""
    from harness.training.tracking import observability

    calls = []
    monkeypatch.setattr(observability, "_MEASURED", {})
    monkeypatch.setattr(observability, "measured_cpu_peak", lambda dtype: calls.append(dtype) or 1e9)
    cpu = torch.device("cpu")
    assert [observability.peak_flops(cpu, d) for d in (torch.float16, torch.float16, torch.float32)] == [1e9] * 3
    assert calls == [torch.float16, torch.float32]
    monkeypatch.undo()
    clock = iter(range(1000))  # every perf_counter call is one second later: the budget ends it at once
    monkeypatch.setattr(observability.time, "perf_counter", lambda: float(next(clock)))
    assert observability.measured_cpu_peak(torch.bfloat16, budget_seconds=0.4) == 2 * 256**3 / 1.0
    assert next(clock) <= 6, "one product timed, none repeated past the budget"
