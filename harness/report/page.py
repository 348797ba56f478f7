"""Draw a run's curves from its CSV logs: ``python -m harness.report RUN_DIR``.

For people without W&B: writes ``RUN_DIR/report/`` with ``loss.png`` (training loss per step,
validation loss per epoch), ``accuracy.png`` (training accuracy, the validation metrics),
``schedule.png`` (learning rate and weight decay), ``throughput.png`` (clips/s, data-wait share,
MFU), ``confusion.png`` (the best epoch's confusion matrix, row-normalised), ``per_class.png``
(precision/recall/F1, or average precision, per class) and ``index.html``, one page with the
run's summary, its last epoch and every chart. Per-step curves are drawn smoothed over the raw
values (faint); every line is in the legend, which sits below the plot, outside the data.
"""

from __future__ import annotations

import csv
import html
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.core.errors import UserError

SMOOTHING = 0.8  #: weight of the exponential moving average of per-step curves (TensorBoard's slider)
#: validation columns of epochs.csv drawn in accuracy.png, when the run wrote them
VALIDATION_METRICS = {
    "val_top1": "validation top-1",
    "val_top5": "validation top-5",
    "val_mean_class_acc": "validation mean per-class accuracy",
    "val_map": "validation mAP",
}


def read_csv(path: Path) -> dict[str, np.ndarray]:
    """Columns of a CSV log as float arrays (empty cells become NaN)."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return {}
    return {key: np.array([_number(r[key]) for r in rows]) for key in rows[0]}


def _number(cell: str | None) -> float:
    try:
        return float(cell) if cell not in ("", None) else np.nan
    except ValueError:  # a text column (best_head...)
        return np.nan


def smooth(values: np.ndarray, weight: float = SMOOTHING) -> np.ndarray:
    """Debiased exponential moving average (TensorBoard's smoothing); NaNs are skipped."""
    out = np.full(len(values), np.nan)
    average, norm = 0.0, 0.0
    for i, value in enumerate(values):
        if np.isfinite(value):
            average = weight * average + (1 - weight) * value
            norm = weight * norm + (1 - weight)
        if norm:
            out[i] = average / norm
    return out


@dataclass
class Series:
    """One line: ``smoothed`` draws the raw values faint and their moving average on top."""

    x: np.ndarray
    y: np.ndarray
    label: str
    right: bool = False  #: on the second y axis
    style: str = "-"
    smoothed: bool = False


def _axes(title: str, xlabel: str, ylabel: str):
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 5), dpi=100)
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    return figure, axis


def _legend_below(figure, handles: list) -> None:
    """One legend of ``handles`` under the axes (outside the data), the axes shrunk to make room."""
    columns = min(3, max(1, len(handles)))
    figure.legend(handles=handles, labels=[h.get_label() for h in handles], loc="lower center", ncol=columns,
                  frameon=False, fontsize=8)  # fmt: skip
    rows = -(-len(handles) // columns)
    figure.tight_layout(rect=(0, 0.05 + 0.045 * rows, 1, 1))


def chart(title: str, xlabel: str, ylabel: str, series: list[Series], right_label: str | None = None):
    """A figure with labelled axes (a second y axis for ``right`` series) and one legend of every
    line, below the plot."""
    import matplotlib.pyplot as plt

    figure, axis = _axes(title, xlabel, ylabel)
    twin = axis.twinx() if any(s.right for s in series) else None
    if twin is not None:
        twin.set_ylabel(right_label or "")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, line in enumerate(series):
        target, color = (twin if line.right else axis), colors[i % len(colors)]
        if line.smoothed:
            target.plot(line.x, line.y, line.style, color=color, alpha=0.25, linewidth=1, label=f"{line.label} (raw)")
            target.plot(line.x, smooth(line.y), line.style, color=color, label=f"{line.label} (smoothed)")
        else:
            target.plot(line.x, line.y, line.style, color=color, label=line.label)
    _legend_below(figure, [h for a in (axis, twin) if a is not None for h in a.get_lines()])
    return figure


def charts(folder: str | Path) -> dict[str, object]:
    """The run's line charts as matplotlib figures, by file stem."""
    folder = Path(folder)
    steps = read_csv(folder / "log_r0.csv") if (folder / "log_r0.csv").is_file() else {}
    if not steps:
        raise UserError(f"{folder / 'log_r0.csv'} is missing or empty: is this a harness run folder?")
    epochs = read_csv(folder / "epochs.csv") if (folder / "epochs.csv").is_file() else {}
    x = steps["step"]
    figures = {}

    loss = [Series(x, steps["loss"], "train loss (per log row)", smoothed=True)]
    if epochs:
        loss.append(Series(epochs["step"], epochs["val_loss"], "validation loss", style="o-"))
    figures["loss"] = chart("loss", "optimizer step", "loss", loss)

    accuracy = [Series(x, steps["acc1"], "train top-1 (per log row)", smoothed=True)]
    for key, label in VALIDATION_METRICS.items():
        if key in epochs and not np.all(np.isnan(epochs[key])):
            accuracy.append(Series(epochs["step"], epochs[key], label, style="o-"))
    figures["accuracy"] = chart("accuracy", "optimizer step", "share (0-1)", accuracy)

    schedule = [Series(x, steps["lr"], "learning rate"), Series(x, steps["wd"], "weight decay", right=True)]
    figures["schedule"] = chart("schedules", "optimizer step", "learning rate", schedule, "weight decay")

    throughput = [Series(x, steps["clips_per_s"], "clips/s", smoothed=True),
                  Series(x, steps["data_wait"], "data-wait share of the step", right=True)]  # fmt: skip
    if not np.all(np.isnan(steps["mfu"])):  # MFU above 100% is never logged (observability)
        throughput.append(Series(x, steps["mfu"], "MFU", right=True))
    figures["throughput"] = chart("throughput", "optimizer step", "clips per second", throughput, "share (0-1)")
    figures["throughput"].axes[1].set_ylim(0, 1)
    return figures


def render(folder: str | Path) -> list[Path]:
    """Write the report PNGs and ``index.html`` for the run in ``folder``; returns their paths."""
    import matplotlib.pyplot as plt

    folder = Path(folder)
    figures = charts(folder)
    out = folder / "report"
    out.mkdir(exist_ok=True)
    written = []
    for name, figure in figures.items():
        figure.savefig(out / f"{name}.png")
        plt.close(figure)
        written.append(out / f"{name}.png")
    confusion_csv = folder / "best_confusion.csv"
    if confusion_csv.is_file():
        from harness.training.confusion import plot_confusion, read_confusion

        matrix, names = read_confusion(confusion_csv)
        plot_confusion(matrix, names, out / "confusion.png", "confusion matrix (best epoch, rows normalised)")
        written.append(out / "confusion.png")
    if (folder / "best_per_class.csv").is_file():
        written.append(_per_class(folder / "best_per_class.csv", out / "per_class.png"))
    written.append(_index(folder, out, written))
    return written


def _per_class(csv_path: Path, png_path: Path, most: int = 60) -> Path:
    """Each class's scores of the best epoch as grouped bars, classes by name (precision, recall
    and F1; average precision for a multi-label run); with more than ``most`` classes, the
    ``most`` lowest (said in the title)."""
    import matplotlib.pyplot as plt

    with open(csv_path, newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.DictReader(handle) if int(row["support"]) > 0]
    keys = ["ap"] if rows and "ap" in rows[0] else ["precision", "recall", "f1"]
    rows.sort(key=lambda row: float(row[keys[-1]]))
    title = "per-class scores (best epoch)"
    if len(rows) > most:
        title = f"per-class scores (best epoch): the {most} lowest {keys[-1]} of {len(rows)} classes"
        rows = rows[:most]
    positions = np.arange(len(rows))
    width = 0.8 / len(keys)
    figure, axis = _axes(title, "class", "score")
    bars = []
    for i, key in enumerate(keys):
        offset = (i - (len(keys) - 1) / 2) * width
        bars.append(axis.bar(positions + offset, [float(row[key]) for row in rows], width=width, label=key))
    axis.set_xticks(positions, [row["class"] for row in rows], rotation=60 if len(rows) > 8 else 0, ha="right")
    axis.set_ylim(0, 1.05)
    _legend_below(figure, bars)
    figure.savefig(png_path)
    plt.close(figure)
    return png_path


def _index(folder: Path, out: Path, images: list[Path]) -> Path:
    """``report/index.html``: the run's summary, its last epoch's metrics, then every chart."""
    summary = json.loads((folder / "summary.json").read_text()) if (folder / "summary.json").is_file() else {}
    shown = {key: summary[key] for key in ("folder", "finished", "failed", "epochs", "steps", "best_epoch",
                                           "best_top1", "wandb_run_id") if key in summary}  # fmt: skip
    last = {}
    if (folder / "epochs.csv").is_file():
        with open(folder / "epochs.csv", newline="", encoding="utf-8") as handle:
            epoch_rows = list(csv.DictReader(handle))
        last = {k: v for k, v in epoch_rows[-1].items() if v not in ("", None)} if epoch_rows else {}

    def table(values: dict) -> str:
        rows = [f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in values.items()]
        return "<table>" + "".join(rows) + "</table>"

    parts = [f"<h1>run {html.escape(folder.resolve().name)}</h1>", "<h2>summary</h2>", table(shown)]
    if last:
        parts += ["<h2>last epoch</h2>", table(last)]
    for image in images:
        parts.append(f'<h2>{image.stem}</h2><img src="{image.name}" alt="{image.stem}">')
    style = "body{font-family:sans-serif;max-width:1000px;margin:auto}th{text-align:left;padding-right:1em}"
    style += "img{max-width:100%}"
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(folder.name)}</title>"
    page += f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n"
    (out / "index.html").write_text(page, encoding="utf-8")
    return out / "index.html"
