"""Any annotation CSV, by naming its columns: ``--annotations my.csv --columns path=clip,label=action``.

``--columns`` maps the harness's fields to the file's column names: ``path`` (the video, relative
to ``--videos``, or a file name or stem found below it) and ``label`` (a class name, or a class id
when every label is digits), optionally ``start`` / ``end`` (a segment in seconds) or
``start_frame`` / ``end_frame`` (in frames), and ``split`` (``train``; ``val``, ``valid`` or
``validation``; ``test``; case ignored). Without a ``split`` column every row is in ``train``
and ``--val-fraction`` of each class's rows (drawn with ``--seed``) go to ``val``. Class names
are numbered in sorted order; ids are kept as they are (``classes.txt`` then names them by their
id). Rows with a segment make a segment listing (``path,label,start,end``); a row whose segment
cells are both empty means the whole video.
"""

from __future__ import annotations

import random
from pathlib import Path

from harness.core.errors import UserError
from harness.datasets.common import Converted, read_csv_rows
from harness.datasets.segments import FRAMES, SECONDS, Segment, Segments

FIELDS = ("path", "label", "split", *SECONDS, *FRAMES)
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


def parse_columns(text: str) -> dict[str, str]:
    """``path=clip,label=action`` -> ``{"path": "clip", "label": "action"}``, checked."""
    mapping: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        field, sep, column = (part.strip() for part in item.partition("="))
        if not sep or not column:
            raise UserError(f"--columns: {item!r} is not field=column (e.g. path=video,label=class)")
        if field not in FIELDS:
            raise UserError(f"--columns: {field!r} is not one of {', '.join(FIELDS)}")
        if field in mapping:
            raise UserError(f"--columns: {field} is given twice")
        mapping[field] = column
    if "path" not in mapping or "label" not in mapping:
        raise UserError("--columns needs path= and label= (the columns of the video and of its class)")
    for pair in (SECONDS, FRAMES):
        if (pair[0] in mapping) != (pair[1] in mapping):
            given, other = (pair[0], pair[1]) if pair[0] in mapping else (pair[1], pair[0])
            raise UserError(f"--columns: {given}= without {other}=")
    if SECONDS[0] in mapping and FRAMES[0] in mapping:
        raise UserError("--columns: a segment in seconds (start, end) or in frames (start_frame, end_frame), not both")
    return mapping


def convert(annotations: Path, columns: dict[str, str], val_fraction: float, seed: int) -> Converted | Segments:
    """The classes and splits of the annotation CSV ``annotations`` read through ``columns``."""
    if "split" in columns and val_fraction > 0:
        raise UserError(f"--val-fraction draws a validation share where the file has no split; --columns names "
                        f"its split column ({columns['split']}): leave one of them out")  # fmt: skip
    unit = next((pair for pair in (SECONDS, FRAMES) if pair[0] in columns), None)
    required = (columns["path"], columns["label"])
    optional = tuple(columns[name] for name in ("split", *(unit or ())) if name in columns)
    rows = read_csv_rows(annotations, required, optional)
    if not rows:
        raise UserError(f"{annotations}: no annotated row below the header")
    entries = []  # (line, split, key, label text, segment or None)
    for line, row in rows:
        split = "train"
        if "split" in columns:
            value = row[columns["split"]].strip().lower()
            if value not in SPLIT_NAMES:
                raise UserError(f"{annotations}:{line}: column {columns['split']}: {value!r} is not a split "
                                f"({', '.join(SPLIT_NAMES)})")  # fmt: skip
            split = SPLIT_NAMES[value]
        segment = _segment(row, columns, unit, annotations, line) if unit else None
        entries.append((line, split, row[columns["path"]].strip(), row[columns["label"]].strip(), segment))
    classes, ids = _classes([entry[3] for entry in entries])
    if val_fraction > 0:
        entries = _held_out(entries, ids, val_fraction, seed)
    if unit is None:
        converted = Converted(classes)
        for _, split, key, label, _ in entries:
            converted.splits.setdefault(split, []).append((key, ids[label]))
        converted.splits.setdefault("val", [])
        return converted
    segments = Segments({"label": classes}, frames=unit == FRAMES)
    for _, split, key, label, (start, end) in entries:
        segments.splits.setdefault(split, []).append(Segment(key, (ids[label],), start, end))
    segments.splits.setdefault("val", [])
    return segments


def _segment(row: dict[str, str], columns: dict[str, str], unit: tuple[str, str], path: Path, line: int,
             ) -> tuple[str, str]:  # fmt: skip
    """A row's ``(start, end)`` as text (both empty: the whole video), checked to be numbers in order."""
    start, end = (row[columns[name]].strip() for name in unit)
    if not start and not end:
        return "", ""
    try:
        first, last = float(start), float(end)
    except ValueError:
        raise UserError(f"{path}:{line}: columns {columns[unit[0]]}, {columns[unit[1]]}: {start!r}, {end!r} are "
                        "not numbers") from None  # fmt: skip
    if unit == FRAMES and not (start.isdigit() and end.isdigit()):
        raise UserError(f"{path}:{line}: frame numbers are whole numbers >= 0, got {start!r} and {end!r}")
    if first < 0 or last < first:
        raise UserError(f"{path}:{line}: the segment [{start}, {end}) ends before it starts, or starts before 0")
    return start, end


def _classes(labels: list[str]) -> tuple[list[str], dict[str, int]]:
    """Class names sorted and numbered, or ids kept (every label digits: ``classes.txt`` names them by id)."""
    if all(label.isdigit() for label in labels):
        largest = max(int(label) for label in labels)
        return [str(i) for i in range(largest + 1)], {label: int(label) for label in labels}
    names = sorted(set(labels))
    return names, {name: index for index, name in enumerate(names)}


def _held_out(entries: list, ids: dict[str, int], fraction: float, seed: int) -> list:
    """``entries`` with ``fraction`` of each class's videos moved to ``val`` (a seeded draw): every
    row of a video (its segments) goes where the video goes (a video's class: its first row's)."""
    rng = random.Random(seed)
    by_class: dict[int, list[str]] = {}
    seen: set[str] = set()
    for _, _, key, label, _ in entries:
        if key not in seen:
            seen.add(key)
            by_class.setdefault(ids[label], []).append(key)
    held = {key for videos in by_class.values() for key in rng.sample(videos, round(fraction * len(videos)))}
    return [(line, "val" if key in held else split, key, label, segment)
            for line, split, key, label, segment in entries]  # fmt: skip
