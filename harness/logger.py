"""Run output behind one small interface: console, per-rank CSV step logs, the epoch log.

Every rank writes its own ``log_r{rank}.csv`` (so a slow or diverging rank is visible); only the
main rank prints and writes ``eval.csv``.
"""

from __future__ import annotations

import csv
import logging
import sys
from pathlib import Path
from typing import Any

STEP_COLUMNS = ("epoch", "step", "loss", "acc1", "acc5", "lr", "wd", "grad_norm", "data_time", "step_time")
EVAL_COLUMNS = (
    "epoch",
    "step",
    "train_loss",
    "train_acc1",
    "train_acc5",
    "val_top1",
    "val_top5",
    "val_mean_class_acc",
    "val_loss",
    "val_count",
)


def setup_console(level: str, is_main: bool) -> None:
    """Console logging: ``level`` on the main rank, warnings only elsewhere."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_harness", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._harness = True
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()) if is_main else logging.WARNING)


class RunLogger:
    """CSV logs of one rank in the run ``folder``.

    Args:
        folder: run folder.
        rank: this process's rank; rank 0 also writes ``epochs.csv``.
        resume_step: when resuming, rows after this optimizer step are dropped (the resumed
            run writes them again), so the logs read as one uninterrupted run.
    """

    def __init__(self, folder: str | Path, rank: int = 0, resume_step: int | None = None) -> None:
        self.folder = Path(folder)
        self.rank = rank
        self.step_path = self.folder / f"log_r{rank}.csv"
        self.eval_path = self.folder / "epochs.csv"
        self._truncate(self.step_path, STEP_COLUMNS, resume_step)
        if rank == 0:
            self._truncate(self.eval_path, EVAL_COLUMNS, resume_step)

    @staticmethod
    def _truncate(path: Path, columns: tuple[str, ...], resume_step: int | None) -> None:
        rows: list[list[str]] = []
        if resume_step is not None and path.exists():
            with open(path, newline="", encoding="utf-8") as handle:
                rows = [row for row in csv.reader(handle)][1:]
            rows = [row for row in rows if row and int(row[1]) <= resume_step]
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(columns)
            writer.writerows(rows)

    @staticmethod
    def _append(path: Path, columns: tuple[str, ...], values: dict[str, Any]) -> None:
        with open(path, "a", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerow([_format(values.get(column)) for column in columns])

    def log_step(self, values: dict[str, Any]) -> None:
        """One training row (columns :data:`STEP_COLUMNS`)."""
        self._append(self.step_path, STEP_COLUMNS, values)

    def log_eval(self, values: dict[str, Any]) -> None:
        """One epoch row (main rank)."""
        if self.rank == 0:
            self._append(self.eval_path, EVAL_COLUMNS, values)


def _format(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # full precision: the resume test compares losses bit for bit
    return str(value)
