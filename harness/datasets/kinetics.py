"""Kinetics 400 / 600 / 700: ``train.csv``, ``validate.csv`` and ``test.csv`` (when it has a
``label`` column) with the columns ``label,youtube_id,time_start,time_end,split`` (some releases
add ``is_cc``). A clip's file is ``<youtube_id>_<time_start:06d>_<time_end:06d>.<suffix>``, found by
its name anywhere below ``--videos`` (flat, ``<split>/`` or ``<split>/<label>/``). Class ids follow
the class names sorted alphabetically."""

from __future__ import annotations

from pathlib import Path

from harness.core.errors import UserError
from harness.datasets.common import Converted, annotation_file, csv_header, read_csv_rows

FILES = "train.csv and validate.csv (and test.csv)"
COLUMNS = ("label", "youtube_id", "time_start", "time_end")
SPLITS = {"train": "train.csv", "val": "validate.csv", "test": "test.csv"}


def clip_stem(row: dict[str, str], where: str) -> str:
    """The file name (without suffix) of a clip: ``<youtube_id>_<start:06d>_<end:06d>``."""
    try:
        start, end = int(float(row["time_start"])), int(float(row["time_end"]))
    except ValueError:
        raise UserError(f"{where}: time_start and time_end must be whole seconds, got "
                        f"{row['time_start']!r}, {row['time_end']!r}") from None  # fmt: skip
    return f"{row['youtube_id']}_{start:06d}_{end:06d}"


def convert(annotations: Path) -> Converted:
    """The splits and classes of the annotation folder ``annotations``."""
    rows: dict[str, list[tuple[str, str]]] = {}
    for split, name in SPLITS.items():
        path = annotations / name
        if split == "test" and not path.is_file():
            continue
        path = annotation_file(annotations, name, FILES)
        if split == "test" and "label" not in csv_header(path):
            continue  # a test split without labels (Kinetics-700-2020) is not a listing
        found = read_csv_rows(path, COLUMNS)
        rows[split] = [(row["label"], clip_stem(row, f"{path}:{line}")) for line, row in found]
    classes = sorted({label for entries in rows.values() for label, _ in entries})
    ids = {name: index for index, name in enumerate(classes)}
    splits = {split: [(stem, ids[label]) for label, stem in entries] for split, entries in rows.items()}
    return Converted(classes, splits)
