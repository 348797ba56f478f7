"""Draw a run's curves from its CSV logs: ``python -m harness.report RUN_DIR``.

For people without W&B: writes ``RUN_DIR/report/`` with ``loss.png`` (training loss per step,
validation loss per epoch), ``accuracy.png`` (training and validation top-1/top-5),
``schedule.png`` (learning rate and weight decay), ``throughput.png`` (clips/s, data-wait share,
MFU) and ``confusion.png`` (the best epoch's confusion matrix, row-normalised).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

from harness.errors import UserError, entry_point


def read_csv(path: Path) -> dict[str, np.ndarray]:
    """Columns of a CSV log as float arrays (empty cells become NaN)."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return {}
    return {key: np.array([float(r[key]) if r[key] not in ("", None) else np.nan for r in rows]) for key in rows[0]}


def _figure(title: str):
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 4.5), dpi=100)
    axis.set_title(title)
    axis.grid(alpha=0.3)
    return plt, figure, axis


def _save(plt, figure, axis, path: Path, xlabel: str) -> None:
    axis.set_xlabel(xlabel)
    axis.legend(loc="best")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def render(folder: str | Path) -> list[Path]:
    """Write the report PNGs for the run in ``folder``; returns their paths."""
    folder = Path(folder)
    steps = read_csv(folder / "log_r0.csv") if (folder / "log_r0.csv").is_file() else {}
    if not steps:
        raise UserError(f"{folder / 'log_r0.csv'} is missing or empty: is this a harness run folder?")
    epochs = read_csv(folder / "epochs.csv") if (folder / "epochs.csv").is_file() else {}
    out = folder / "report"
    out.mkdir(exist_ok=True)
    written = []

    plt, figure, axis = _figure("loss")
    axis.plot(steps["step"], steps["loss"], label="train (per log row)")
    if epochs:
        axis.plot(epochs["step"], epochs["val_loss"], "o-", label="validation")
    _save(plt, figure, axis, out / "loss.png", "optimizer step")
    written.append(out / "loss.png")

    plt, figure, axis = _figure("accuracy")
    axis.plot(steps["step"], steps["acc1"], alpha=0.5, label="train top-1")
    if epochs:
        axis.plot(epochs["step"], epochs["val_top1"], "o-", label="validation top-1")
        axis.plot(epochs["step"], epochs["val_top5"], "s--", label="validation top-5")
    _save(plt, figure, axis, out / "accuracy.png", "optimizer step")
    written.append(out / "accuracy.png")

    plt, figure, axis = _figure("schedules")
    axis.plot(steps["step"], steps["lr"], label="learning rate")
    twin = axis.twinx()
    twin.plot(steps["step"], steps["wd"], color="tab:orange", label="weight decay")
    twin.set_ylabel("weight decay")
    _save(plt, figure, axis, out / "schedule.png", "optimizer step")
    written.append(out / "schedule.png")

    plt, figure, axis = _figure("throughput")
    axis.plot(steps["step"], steps["clips_per_s"], label="clips/s")
    twin = axis.twinx()
    twin.plot(steps["step"], steps["data_wait"], color="tab:red", label="data-wait share")
    if not np.all(np.isnan(steps["mfu"])):
        twin.plot(steps["step"], steps["mfu"], color="tab:green", label="MFU")
    twin.set_ylim(0, 1)
    twin.legend(loc="lower right")
    _save(plt, figure, axis, out / "throughput.png", "optimizer step")
    written.append(out / "throughput.png")

    confusion_csv = folder / "best_confusion.csv"
    if confusion_csv.is_file():
        from harness.training.confusion import plot_confusion, read_confusion

        matrix, names = read_confusion(confusion_csv)
        plot_confusion(matrix, names, out / "confusion.png", "confusion matrix (best epoch, rows normalised)")
        written.append(out / "confusion.png")
    if (folder / "best_per_class.csv").is_file():
        written.append(_per_class(folder / "best_per_class.csv", out / "per_class.png"))
    return written


def _per_class(csv_path: Path, png_path: Path, most: int = 60) -> Path:
    """Precision, recall and F1 of each class (best epoch) as grouped bars, classes by name; with
    more than ``most`` classes, the ``most`` lowest F1 (said in the title)."""
    with open(csv_path, newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.DictReader(handle) if int(row["support"]) > 0]
    rows.sort(key=lambda row: float(row["f1"]))
    title = "per-class scores (best epoch)"
    if len(rows) > most:
        rows, title = rows[:most], f"per-class scores (best epoch): the {most} lowest F1 of {len(rows)} classes"
    plt, figure, axis = _figure(title)
    positions = np.arange(len(rows))
    for offset, key in ((-0.27, "precision"), (0.0, "recall"), (0.27, "f1")):
        axis.bar(positions + offset, [float(row[key]) for row in rows], width=0.27, label=key)
    axis.set_xticks(positions, [row["class"] for row in rows], rotation=60 if len(rows) > 8 else 0, ha="right")
    axis.set_ylim(0, 1.05)
    axis.set_ylabel("score")
    _save(plt, figure, axis, png_path, "class")
    return png_path


@entry_point
def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="harness-report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("folder", help="run folder")
    args = parser.parse_args(argv)
    paths = render(args.folder)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
