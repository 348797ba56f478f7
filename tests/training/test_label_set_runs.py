"""Label-set runs end to end (slow): the demo in three label sets (configs/demo_label_sets.yaml)
learns every set in one run, ``harness.evaluate`` and ``harness.predict`` report every set, and a
label-set run killed mid-epoch resumes bit for bit."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.config import load_config, save_config
from harness.data.synthetic import LABEL_SETS, make_label_set_demo
from harness.training import Trainer
from harness.training.metrics import set_columns
from tests.conftest import tiny_overrides
from tests.test_train_cli import kill_at_step

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "demo_label_sets.yaml"
CHANCE = {"axis": 0.5, "sense": 0.5, "direction": 0.25}


def set_overrides(root: Path, folder: Path, *extra: str) -> list[str]:
    """Overrides pointing a config at the label-set demo data in ``root``."""
    names = ", ".join(f"{name}: {root / f'classes_{name}.txt'}" for name in LABEL_SETS)
    return [f"folder={folder}", f"data.datasets=[{root / 'train.csv'}]", f"data.val_datasets=[{root / 'val.csv'}]",
            f"data.class_names={{{names}}}", "data.generate_demo_data=false", "logging.progress_bar=false",
            "meta.label_sets=[axis, sense, direction]", *extra]  # fmt: skip


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_the_label_set_demo_learns_every_set_and_evaluate_and_predict_report_each(tmp_path, capsys):
    from harness.evaluate.cli import main as evaluate
    from harness.predict.cli import main as predict

    root, folder = tmp_path / "data", tmp_path / "run"
    make_label_set_demo(root, 12, 4, progress=False)  # 48 training, 16 validation videos
    Trainer(load_config(CONFIG, set_overrides(root, folder, "logging.level=warning"))).fit()
    epochs = rows(folder / "epochs.csv")
    assert set(set_columns(list(LABEL_SETS))) <= set(epochs[0]), "per-set columns in epochs.csv"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["best_metric"] == "val_top1"
    best = epochs[summary["best_epoch"] - 1]
    for name, chance in CHANCE.items():  # 16 videos: chance is 8, 8 and 4 right
        assert float(best[f"val_top1_{name}"]) >= chance + 0.25, (name, best)
        assert float(best[f"val_recall5_{name}"]) == 1.0, "5 covers every class of these sets"
    assert float(best["val_top1"]) == pytest.approx(sum(float(best[f"val_top1_{n}"]) for n in LABEL_SETS) / 3)
    assert summary["best_top1"] == pytest.approx(float(best["val_top1"]))
    predictions = rows(folder / "best_predictions.csv")
    assert len(predictions) == 16 and {"axis_name", "sense_name1", "direction_score4"} <= set(predictions[0])
    assert all(row["direction_name"] == Path(row["video"]).name.split("_")[0] for row in predictions)
    per_class = rows(folder / "best_per_class_sense.csv")
    assert [row["class"] for row in per_class] == list(LABEL_SETS["sense"]) and "recall5" in per_class[0]
    assert not (folder / "best_confusion.csv").exists()

    assert evaluate(["--config", str(folder / "config.yaml"), "--checkpoint", str(folder / "checkpoints" / "best"),
                     "--out", str(tmp_path / "eval")]) == 0  # fmt: skip
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    for name in LABEL_SETS:
        for metric in ("top1", "top5", "recall5", "loss"):
            key = f"val_{metric}_{name}"
            assert evaluated[key] == pytest.approx(float(best[key])), f"harness.evaluate scores {key} alike"
    assert (tmp_path / "eval" / "per_class_direction.csv").is_file()

    capsys.readouterr()
    out = tmp_path / "p.csv"
    assert predict([str(folder), str(root / "val"), "--output", str(out), "--top-k", "2"]) == 0
    predicted = rows(out)
    assert len(predicted) == 16
    assert list(predicted[0])[1:4] == ["axis_pred1", "axis_name1", "axis_prob1"] and "direction_prob2" in predicted[0]
    for name, classes in LABEL_SETS.items():
        assert {row[f"{name}_name1"] for row in predicted} <= set(classes), "each set's own class names"
    direction_right = sum(row["direction_name1"] == Path(row["video"]).name.split("_")[0] for row in predicted)
    assert direction_right == round(16 * float(best["val_top1_direction"])), "predict agrees with the evaluation"
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith(str(root))]
    assert len(printed) == 16 and all(" axis " in line and ", direction " in line for line in printed)

    # An export carries the sets; it predicts as the run folder does; hf (one softmax) refuses them.
    import harness
    from harness.core.errors import UserError
    from harness.export.writing import export

    export(folder, tmp_path / "exported")
    described = json.loads((tmp_path / "exported" / "model.json").read_text())
    assert described["preprocessing"]["label_sets"] == {"axis": 2, "sense": 2, "direction": 4}
    assert described["num_classes"] == 8 and described["label_map"]["2"] == "forward", "every set's names end to end"
    assert harness.load_classifier(tmp_path / "exported")[1].label_sets == {"axis": 2, "sense": 2, "direction": 4}
    assert predict([str(tmp_path / "exported"), str(root / "val"), "--output", str(tmp_path / "e.csv")]) == 0
    assert [row["direction_name1"] for row in rows(tmp_path / "e.csv")] == [row["direction_name1"] for row in predicted]
    with pytest.raises(UserError, match="the hf format holds one softmax over all classes"):
        export(folder, tmp_path / "hf", "hf")


def write_config(root: Path, folder: Path, path: Path, *extra: str) -> Path:
    overrides = [o for o in tiny_overrides(root, folder, *extra) if not o.startswith("data.class_names=")]
    save_config(load_config(None, set_overrides(root, folder, *overrides)), path)
    return path


@pytest.mark.slow
def test_a_label_set_run_killed_mid_epoch_resumes_bit_for_bit(tmp_path):
    root = tmp_path / "data"
    make_label_set_demo(root, 6, 2, num_frames=24, size=(48, 64), progress=False)
    extra = ("data.batch_size=2", "data.num_workers=1", "optimization.epochs=3", "checkpointing.every_steps=4",
             "logging.log_every=3", "optimization.mixup=0.8", "optimization.label_smoothing=0.1")  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    reference = write_config(root, tmp_path / "reference", tmp_path / "reference.yaml", *extra)
    subprocess.run([sys.executable, "-m", "harness.train", "--config", str(reference)], cwd=REPO, env=env,
                   check=True, capture_output=True)  # fmt: skip
    steps_per_epoch = 24 // 2

    folder = tmp_path / "killed"
    command = [sys.executable, "-m", "harness.train", "--config",
               str(write_config(root, folder, tmp_path / "killed.yaml", *extra))]  # fmt: skip
    killed_at = kill_at_step(command, env, folder, steps_per_epoch + 5)
    assert steps_per_epoch < killed_at < 2 * steps_per_epoch, "killed in epoch 2"
    rerun = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=True)
    resumed = [line for line in rerun.stderr.splitlines() if "resumed from" in line]
    assert resumed and int(resumed[0].rsplit("step ", 1)[1]) % steps_per_epoch != 0, "resumed inside an epoch"
    steps = ("step", "loss", "acc1", "acc5", "grad_norm")
    assert picked(folder / "log_r0.csv", steps) == picked(tmp_path / "reference" / "log_r0.csv", steps)
    columns = ("epoch", "step", "train_loss", "val_loss", *set_columns(list(LABEL_SETS)))
    assert picked(folder / "epochs.csv", columns) == picked(tmp_path / "reference" / "epochs.csv", columns), (
        "every set's metrics after the resume equal the uninterrupted run's"
    )


def picked(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    """The ``columns`` of every row of a CSV log (full-precision text: equal means bit for bit)."""
    found = rows(path)
    assert found, f"{path} has no rows"
    return [{key: row[key] for key in columns} for row in found]
