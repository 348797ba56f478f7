"""Evaluation artefacts a person reads: predictions with class names, the confusion matrix as CSV
and as a labelled plot."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from harness.data.listing import label_ids, names_of_label

MAX_PLOTTED = 30  # classes shown by name in the plot; beyond, the most confused ones
ANNOTATE_UP_TO = 20  # classes up to which each cell shows its count


def write_predictions(rows: list[tuple[str, int | list[int], list[int], list[float]]], path: str | Path,
                      names: list[str]) -> None:  # fmt: skip
    """CSV ``video,label,label_name,pred1,name1,score1,...`` sorted by video (rows of every rank);
    a multi-label video's labels are joined by ``;``."""
    k = max((len(top) for _, _, top, _ in rows), default=0)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        columns = [f"{column}{i + 1}" for i in range(k) for column in ("pred", "name", "score")]
        writer.writerow(["video", "label", "label_name", *columns])
        for video, label, top, score in sorted(rows, key=lambda row: row[0]):
            cells = [v for c, s in zip(top, score) for v in (c, names[c], f"{s:.6f}")]
            writer.writerow([video, ";".join(map(str, label_ids(label))), names_of_label(label, names), *cells])


def write_set_predictions(rows: list[tuple[str, list[int], list[list[int]], list[list[float]]]], path: str | Path,
                          names: dict[str, list[str]]) -> None:  # fmt: skip
    """A label-set run's predictions (rows of every rank, sorted by video): CSV ``video``, then per
    set (``names``: each set's class names, in the sets' order) its label id and name and its top
    classes, ``verb,verb_name,verb_pred1,verb_name1,verb_score1,...,noun,...``."""
    k = {name: max((len(top[index]) for _, _, top, _ in rows), default=0) for index, name in enumerate(names)}
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["video", *(column for name in names for column in (name, f"{name}_name", *(
            f"{name}_{kind}{i + 1}" for i in range(k[name]) for kind in ("pred", "name", "score"))))])  # fmt: skip
        for video, labels, tops, scores in sorted(rows, key=lambda row: row[0]):
            cells = [video]
            for classes, label, top, score in zip(names.values(), labels, tops, scores):
                cells += [label, classes[label], *(v for c, p in zip(top, score) for v in (c, classes[c], f"{p:.6f}"))]
            writer.writerow(cells)


def write_confusion(confusion: torch.Tensor, csv_path: str | Path, png_path: str | Path, names: list[str]) -> None:
    """Confusion matrix as CSV (rows: true class, columns: predicted; headed by class names) and
    as a labelled heat map (:func:`plot_confusion`)."""
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["true\\pred", *names])
        for name, row in zip(names, confusion.tolist()):
            writer.writerow([name, *row])
    plot_confusion(confusion.numpy(), names, png_path)


def write_per_class(scores: dict[str, np.ndarray], path: str | Path, names: list[str]) -> None:
    """Per class: support, precision, recall, F1 (:func:`harness.training.metrics.per_class_scores`),
    average precision (``ap``) for a multi-label run, recall@5 (``recall5``) for a label set."""
    keys = [k for k in ("ap", "precision", "recall", "f1", "recall5") if k in scores]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["class", "support", *keys])
        for index, name in enumerate(names):
            writer.writerow([name, int(scores["support"][index]), *(f"{scores[k][index]:.6f}" for k in keys)])


def read_confusion(csv_path: str | Path) -> tuple[np.ndarray, list[str]]:
    """The matrix and class names of a CSV written by :func:`write_confusion`."""
    with open(csv_path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    return np.array([[float(v) for v in row[1:]] for row in rows[1:]]), rows[0][1:]


def most_confused(confusion: np.ndarray, count: int) -> np.ndarray:
    """Indices of the ``count`` classes involved in the most errors (as true or predicted class),
    in id order."""
    errors = confusion - np.diag(np.diag(confusion))
    involvement = errors.sum(0) + errors.sum(1)
    return np.sort(np.argsort(-involvement, kind="stable")[:count])


def plot_confusion(confusion: np.ndarray, names: list[str], path: str | Path, title: str = "confusion matrix") -> None:
    """Row-normalised heat map with a colour bar, axes titled and ticks named; counts in the cells
    up to :data:`ANNOTATE_UP_TO` classes; beyond :data:`MAX_PLOTTED` classes, the most confused
    ones only (said in the title)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = len(names)
    shown = np.arange(classes) if classes <= MAX_PLOTTED else most_confused(confusion, MAX_PLOTTED)
    matrix = confusion[np.ix_(shown, shown)]
    rates = confusion[shown] / np.maximum(confusion[shown].sum(1, keepdims=True), 1)
    rates = rates[:, shown]
    if classes > MAX_PLOTTED:
        title += f" ({len(shown)} most confused of {classes} classes)"
    side = min(16.0, 3.0 + 0.35 * len(shown))
    figure, axis = plt.subplots(figsize=(side + 1.5, side))
    image = axis.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04, label="share of the true class's videos")
    labels = [names[i] for i in shown]
    axis.set_xticks(range(len(shown)), labels, rotation=60, ha="right", fontsize=8)
    axis.set_yticks(range(len(shown)), labels, fontsize=8)
    axis.set_xlabel("predicted class")
    axis.set_ylabel("true class")
    axis.set_title(title)
    if len(shown) <= ANNOTATE_UP_TO:
        for row in range(len(shown)):
            for column in range(len(shown)):
                count = int(matrix[row, column])
                if count:
                    colour = "white" if rates[row, column] > 0.5 else "black"
                    axis.text(column, row, str(count), ha="center", va="center", fontsize=8, color=colour)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
