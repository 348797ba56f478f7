"""Segment listings: one line per annotated interval of a longer video, with one label column per
label set (EPIC-KITCHENS-100's ``verb``, ``noun``, ``action``; Charades' ``label``).

The CSV written has a header, ``path,<set>,...,start,end`` with ``start`` / ``end`` in seconds, or
``path,<set>,...,start_frame,end_frame`` with 0-based frame positions, ``end_frame`` exclusive (a
frame folder's frames in name order). A label is a class id, or several ids joined by commas (the
field is then quoted). Class names go to ``classes_<set>.txt`` per set, or ``classes.txt`` when the
one set is ``label``; videos not on disk go to ``missing.txt`` once per split, as ``split key``."""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness.data.listing import format_label, label_ids
from harness.datasets.common import write_names

SECONDS, FRAMES = ("start", "end"), ("start_frame", "end_frame")  #: the interval's header words


@dataclass
class Segment:
    """One interval of the video ``key``: ``labels[i]`` is its label in the ``i``-th label set (a
    class id or a tuple of ids); ``start`` / ``end`` are numbers as text, written as they are (so
    ``00:01:02.345`` stays ``62.345``, with no binary rounding)."""

    key: str
    labels: tuple[int | tuple[int, ...], ...]
    start: str
    end: str
    fps: str = ""  #: the video's frame rate, as text (a frame folder's: the listing's fps column)


@dataclass
class Segments:
    """A segmented dataset: ``label_sets`` maps each set's name to its class names (id order),
    ``splits`` each split to its segments, ``frames`` says whether intervals are frame positions
    (else seconds); ``notes[split]`` is added to that split's summary line."""

    label_sets: dict[str, list[str]]
    frames: bool = False
    rated: bool = False  #: the listing has an ``fps`` column (each segment's ``fps``)
    splits: dict[str, list[Segment]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    def header(self) -> list[str]:
        """The listing's header row."""
        return ["path", *self.label_sets, *(FRAMES if self.frames else SECONDS), *(("fps",) if self.rated else ())]

    def class_files(self) -> dict[str, str]:
        """Label set -> the file name of its class names."""
        if list(self.label_sets) == ["label"]:
            return {"label": "classes.txt"}
        return {name: f"classes_{name}.txt" for name in self.label_sets}


def classes_text(counts: list[int], names: list[str]) -> str:
    """``157 classes``, or ``97 verb / 300 noun / 3806 action classes``."""
    if names == ["label"]:
        return f"{counts[0]} classes"
    return " / ".join(f"{count} {name}" for count, name in zip(counts, names)) + " classes"


def write_segments(segments: Segments, find: Callable[[str], Path | None], output: Path) -> tuple[list[str], int]:
    """Write ``output/<split>.csv`` (absolute paths; the segments of a video not on disk are left
    out), the class-name files and ``missing.txt``; return the summary lines and the number of
    segments listed. ``find`` gives a key's video (or frame folder), or None when it is absent."""
    output.mkdir(parents=True, exist_ok=True)
    names = list(segments.label_sets)
    found: dict[str, Path | None] = {}
    lines, missing, listed, videos_listed = [], [], 0, set()
    for split, entries in segments.splits.items():
        rows, videos, absent, seen = [], set(), [], [set() for _ in names]
        for segment in entries:
            if segment.key not in found:
                found[segment.key] = find(segment.key)
            path = found[segment.key]
            if path is None:
                if segment.key not in absent:
                    absent.append(segment.key)
                continue
            videos.add(segment.key)
            for ids, label in zip(seen, segment.labels):
                ids.update(label_ids(label))
            rows.append([os.path.abspath(path), *(format_label(label) for label in segment.labels),
                         segment.start, segment.end, *((segment.fps,) if segments.rated else ())])  # fmt: skip
        with open(output / f"{split}.csv", "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")  # quotes a path or label holding a comma
            writer.writerow(segments.header())
            writer.writerows(rows)
        missing += [f"{split} {key}" for key in absent]
        left = len(entries) - len(rows)
        note = f", {segments.notes[split]}" if split in segments.notes else ""
        lines.append(f"{split}: {len(rows)} segments of {len(videos)} videos listed, "
                     f"{classes_text([len(ids) for ids in seen], names)}, {len(absent)} videos missing on disk "
                     f"({left} segments){note}")  # fmt: skip
        listed += len(rows)
        videos_listed |= videos
    for name, file in segments.class_files().items():
        write_names(output / file, segments.label_sets[name])
    write_names(output / "missing.txt", missing)
    sizes = [len(classes) for classes in segments.label_sets.values()]
    lines.append(f"total: {listed} segments of {len(videos_listed)} videos listed, {classes_text(sizes, names)}, "
                 f"{len(missing)} videos missing on disk" + (f" (see {output / 'missing.txt'})" if missing else "")
                 + f"; wrote {output}")  # fmt: skip
    return lines, listed
