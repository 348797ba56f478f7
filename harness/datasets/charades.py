"""Charades (v1): ``Charades_v1_classes.txt`` (``c000 Holding some clothes``: ids 0..156),
``Charades_v1_train.csv`` and ``Charades_v1_test.csv`` (header ``id,subject,scene,quality,
relevance,verified,script,objects,descriptions,actions,length``; ``actions`` is
``c092 11.90 21.20;c147 0.00 12.60``: class, start and end in seconds, and may be empty); the
videos are ``<id>.mp4``. The test split becomes ``val.csv``.

By default a video-level multi-label listing, the standard Charades benchmark (mAP over classes):
each video with every class it has, ``path 92,147`` (train with ``meta.multi_label: true``).
With ``segments`` a segment listing instead (:mod:`.segments`): one line per distinct interval of
a video, labelled with every class annotated over exactly that interval (``"92,147"`` when several
share it; overlapping intervals of other classes are not merged in). Videos without actions carry
no label and are left out (counted in the summary), as are intervals whose end is not after their
start."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from pathlib import Path

from harness.core.errors import UserError
from harness.datasets.common import Converted, annotation_file, read_csv_rows, text_lines
from harness.datasets.segments import Segment, Segments

FILES = "Charades_v1_classes.txt, Charades_v1_train.csv and Charades_v1_test.csv"
SPLITS = {"train": "Charades_v1_train.csv", "val": "Charades_v1_test.csv"}
CLASS_CODE = re.compile(r"c(\d+)")  #: ``c092`` -> class id 92

Interval = tuple[int, Decimal, Decimal]  #: (class id, start, end) in seconds


def read_classes(path: Path) -> list[str]:
    """The class names of ``Charades_v1_classes.txt`` in id order (``c000`` .. ``cNNN``, each once)."""
    names: dict[int, str] = {}
    for line, words in text_lines(path):
        code = CLASS_CODE.fullmatch(words[0])
        if code is None or len(words) < 2:
            raise UserError(f"{path}:{line}: expected 'c<id> <class name>', got {' '.join(words)!r}")
        names[int(code.group(1))] = " ".join(words[1:])
    if sorted(names) != list(range(len(names))):
        raise UserError(f"{path}: the class ids must run c000..c{len(names) - 1:03d}, each once")
    return [names[index] for index in range(len(names))]


def parse_actions(text: str, classes: int, where: str) -> list[Interval]:
    """The ``actions`` field: ``c092 11.90 21.20;c147 0.00 12.60`` -> ``[(92, 11.90, 21.20), ...]``."""
    intervals = []
    for item in text.split(";"):
        words = item.split()
        code = CLASS_CODE.fullmatch(words[0]) if words else None
        try:
            start, end = (Decimal(word) for word in words[1:]) if len(words) == 3 else (None, None)
        except InvalidOperation:
            start = end = None
        if code is None or start is None or not start.is_finite() or not end.is_finite():
            raise UserError(f"{where}: column actions: {item.strip()!r} is not 'c<id> <start> <end>' (seconds)")
        if int(code.group(1)) >= classes:
            raise UserError(f"{where}: column actions: {words[0]} is not a class of Charades_v1_classes.txt "
                            f"(c000..c{classes - 1:03d})")  # fmt: skip
        intervals.append((int(code.group(1)), start, end))
    return intervals


def read_split(path: Path, classes: int) -> list[tuple[str, list[Interval]]]:
    """``(video id, its intervals)`` per row of a split file (no intervals: an empty ``actions``)."""
    found = []
    for line, row in read_csv_rows(path, ("id",), optional=("actions",)):
        text = row["actions"].strip()
        found.append((row["id"], parse_actions(text, classes, f"{path}:{line}") if text else []))
    return found


def video_label(intervals: list[Interval]) -> int | tuple[int, ...]:
    """Every class of a video, sorted: one id, or a tuple of several."""
    ids = sorted({label for label, _, _ in intervals})
    return ids[0] if len(ids) == 1 else tuple(ids)


def interval_segments(video: str, intervals: list[Interval]) -> tuple[list[Segment], int]:
    """One segment per distinct ``(start, end)`` of a video (in order of first appearance) with
    every class of that interval, and the number of empty intervals (end not after start) left out."""
    by_interval: dict[tuple[Decimal, Decimal], set[int]] = {}
    empty = 0
    for label, start, end in intervals:
        if end <= start:
            empty += 1
            continue
        by_interval.setdefault((start, end), set()).add(label)
    segments = []
    for (start, end), ids in by_interval.items():
        label = min(ids) if len(ids) == 1 else tuple(sorted(ids))
        segments.append(Segment(video, (label,), str(start), str(end)))
    return segments, empty


def convert(annotations: Path, segments: bool = False) -> Converted | Segments:
    """The video-level listings of the annotation folder ``annotations`` (or, with ``segments``,
    its segment listings)."""
    classes = read_classes(annotation_file(annotations, "Charades_v1_classes.txt", FILES))
    rows = {split: read_split(annotation_file(annotations, name, FILES), len(classes))
            for split, name in SPLITS.items()}  # fmt: skip
    if not segments:
        converted = Converted(classes)
        for split, found in rows.items():
            converted.splits[split] = [(video, video_label(intervals)) for video, intervals in found if intervals]
            unlabelled = len(found) - len(converted.splits[split])
            if unlabelled:
                converted.notes[split] = f"{unlabelled} videos without actions left out"
        return converted
    listing = Segments({"label": classes})
    for split, found in rows.items():
        listing.splits[split], empty, unlabelled = [], 0, 0
        for video, intervals in found:
            made, dropped = interval_segments(video, intervals)
            listing.splits[split] += made
            empty, unlabelled = empty + dropped, unlabelled + (not intervals)
        notes = []
        if unlabelled:
            notes.append(f"{unlabelled} videos without actions")
        if empty:
            notes.append(f"{empty} empty intervals")
        if notes:
            listing.notes[split] = " and ".join(notes) + " left out"
    return listing
