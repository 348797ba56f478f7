"""EPIC-KITCHENS-100 action recognition (epic-kitchens-100-annotations): ``EPIC_100_train.csv`` and
``EPIC_100_validation.csv`` (one action segment a row: ``participant_id``, ``video_id``,
``start_timestamp`` / ``stop_timestamp`` as ``HH:MM:SS.ss``, ``start_frame`` / ``stop_frame``
1-based and inclusive, ``verb_class``, ``noun_class``, ...), ``EPIC_100_verb_classes.csv`` and
``EPIC_100_noun_classes.csv`` (``id,key,instances,category``). The validation file becomes
``val.csv``; the test split has no labels and is left out.

Three label sets: ``verb`` and ``noun`` keep the official class ids; ``action`` numbers the
(verb, noun) pairs seen in the annotations in sorted (verb, noun) order, each named
``<verb key> <noun key>`` (a space: noun keys hold colons already, ``board:chopping``). The pairs
are those of train and validation, or (``action_pairs="train"``, V-JEPA 2's EK100 choice) those of
train alone, validation segments of any other pair then being left out.

Videos are ``<participant>/videos/<video_id>.MP4`` (or ``<participant>/<video_id>.MP4``, or flat
``<video_id>.MP4``; suffix case ignored), intervals in seconds; frame folders
``<participant>/rgb_frames/<video_id>/`` (or ``<participant>/<video_id>/``, or flat) give
intervals in frames: 0-based positions among the folder's frames in name order, end exclusive,
so ``frame_0000000001.jpg`` is position 0 and rows ``start_frame..stop_frame`` become
``start_frame - 1 .. stop_frame``; with ``EPIC_100_video_info.csv`` among the annotations, each
line also gets its video's frame rate (an ``fps`` column: EPIC's videos run at several rates)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from harness.core.errors import UserError
from harness.datasets.common import VIDEO_SUFFIXES, annotation_file, read_csv_rows
from harness.datasets.segments import Segment, Segments

FILES = "EPIC_100_train.csv, EPIC_100_validation.csv, EPIC_100_verb_classes.csv and EPIC_100_noun_classes.csv"
SPLITS = {"train": "EPIC_100_train.csv", "val": "EPIC_100_validation.csv"}
VIDEO_INFO = "EPIC_100_video_info.csv"  #: optional: each video's frame rate, written for frame folders
COLUMNS = ("participant_id", "video_id", "start_timestamp", "stop_timestamp", "start_frame", "stop_frame",
           "verb_class", "noun_class")  # fmt: skip
TIMESTAMP = re.compile(r"(\d+):([0-5]\d):([0-5]\d(?:\.\d+)?)")  #: ``00:01:02.345``
ACTION_PAIRS = ("all", "train")  #: the pairs numbered as actions: train and validation, or train only


@dataclass
class Annotation:
    """One row of a split file: the video's key ``<participant>/<video_id>``, its verb and noun
    class ids and its interval (seconds or frame positions, as text)."""

    key: str
    verb: int
    noun: int
    start: str
    end: str


def read_rates(path: Path) -> dict[str, str]:
    """Video id -> its frame rate (as written) from ``EPIC_100_video_info.csv``
    (``video_id,duration,fps,resolution``): EPIC's videos run at 59.94, 50, 29.97, 47.95 or 90 fps,
    and a frame folder's start_frame / stop_frame count the video's own frames."""
    rates = {}
    for line, row in read_csv_rows(path, ("video_id", "fps")):
        try:
            valid = float(row["fps"]) > 0
        except ValueError:
            valid = False
        if not valid:
            raise UserError(f"{path}:{line}: column fps: {row['fps']!r} is not a frame rate")
        rates[row["video_id"]] = row["fps"]
    return rates


def read_classes(path: Path) -> list[str]:
    """The ``key`` of each class of a verb or noun class file, in id order (ids 0..N-1, each once)."""
    keys: dict[int, str] = {}
    rows = read_csv_rows(path, ("id", "key"))
    for line, row in rows:
        if not row["id"].isdigit():
            raise UserError(f"{path}:{line}: column id: {row['id']!r} is not a class id (a whole number)")
        keys[int(row["id"])] = row["key"]
    if sorted(keys) != list(range(len(rows))):
        raise UserError(f"{path}: the class ids must be 0..{len(rows) - 1}, each once")
    return [keys[index] for index in range(len(keys))]


def seconds(text: str, where: str, column: str) -> Decimal:
    """``HH:MM:SS.ss`` in seconds, exactly (``00:01:02.345`` -> ``62.345``)."""
    match = TIMESTAMP.fullmatch(text.strip())
    if match is None:
        raise UserError(f"{where}: column {column}: {text!r} is not a time HH:MM:SS.ss")
    hours, minutes, rest = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + Decimal(rest)


def whole(text: str, where: str, column: str, limit: int | None = None, what: str = "") -> int:
    """A non-negative whole number (below ``limit`` when given: a class id of ``what``)."""
    value = int(text) if text.strip().isdigit() else -1
    if value < 0 or (limit is not None and value >= limit):
        expected = f"a class id of {what} (0..{limit - 1})" if limit is not None else "a whole number"
        raise UserError(f"{where}: column {column}: {text!r} is not {expected}")
    return value


def read_split(path: Path, verbs: int, nouns: int, frames: bool) -> list[Annotation]:
    """The segments of one split file; ``verbs`` / ``nouns`` are the sizes of the class files."""
    found = []
    for line, row in read_csv_rows(path, COLUMNS):
        where = f"{path}:{line}"
        verb = whole(row["verb_class"], where, "verb_class", verbs, "EPIC_100_verb_classes.csv")
        noun = whole(row["noun_class"], where, "noun_class", nouns, "EPIC_100_noun_classes.csv")
        if frames:
            first, last = (whole(row[column], where, column) for column in ("start_frame", "stop_frame"))
            start, end, column = max(first - 1, 0), last, "stop_frame"  # 1-based inclusive -> 0-based exclusive
        else:
            start, end = (seconds(row[column], where, column) for column in ("start_timestamp", "stop_timestamp"))
            column = "stop_timestamp"
        if end < start:
            raise UserError(f"{where}: column {column}: {row[column]!r} is before the segment's start")
        found.append(Annotation(f"{row['participant_id']}/{row['video_id']}", verb, noun, str(start), str(end)))
    return found


def convert(annotations: Path, frames: bool = False, action_pairs: str = "all") -> Segments:
    """The segments and label sets of the annotation folder ``annotations``; ``frames``: intervals
    in frame positions (frame folders) instead of seconds."""
    verbs = read_classes(annotation_file(annotations, "EPIC_100_verb_classes.csv", FILES))
    nouns = read_classes(annotation_file(annotations, "EPIC_100_noun_classes.csv", FILES))
    rows = {split: read_split(annotation_file(annotations, name, FILES), len(verbs), len(nouns), frames)
            for split, name in SPLITS.items()}  # fmt: skip
    counted = rows["train"] if action_pairs == "train" else [row for split in rows.values() for row in split]
    pairs = sorted({(row.verb, row.noun) for row in counted})
    action = {pair: index for index, pair in enumerate(pairs)}
    names = {"verb": verbs, "noun": nouns, "action": [f"{verbs[verb]} {nouns[noun]}" for verb, noun in pairs]}
    info = annotations / VIDEO_INFO
    rates = read_rates(info) if frames and info.is_file() else {}  # a frame folder does not say its rate
    segments = Segments(names, frames=frames, rated=bool(rates))
    for split, found in rows.items():
        kept = [row for row in found if (row.verb, row.noun) in action]
        segments.splits[split] = [Segment(row.key, (row.verb, row.noun, action[row.verb, row.noun]), row.start,
                                          row.end, rates.get(row.key.rsplit("/", 1)[-1], ""))
                                  for row in kept]  # fmt: skip
        if len(kept) < len(found):
            segments.notes[split] = f"{len(found) - len(kept)} segments of a (verb, noun) pair not in train left out"
    return segments


class VideoFinder:
    """Finds the video (or, with ``frames``, the frame folder) of a key ``<participant>/<video_id>``
    below ``root``: in ``<participant>/videos/`` (``<participant>/rgb_frames/``), ``<participant>/``,
    or ``root`` itself, the suffix's case ignored. Each folder is listed once, never walked: an
    EPIC-KITCHENS tree holds millions of frame files."""

    def __init__(self, root: Path, frames: bool = False) -> None:
        self.root, self.frames = root, frames
        self.listed: dict[Path, dict[str, Path]] = {}

    def entries(self, folder: Path) -> dict[str, Path]:
        """Video id -> path of the videos (frame folders) directly in ``folder``."""
        if folder not in self.listed:
            found: dict[str, Path] = {}
            names = sorted(os.listdir(folder)) if folder.is_dir() else []
            for name in names:
                path = folder / name
                if self.frames and path.is_dir():
                    found.setdefault(name, path)
                elif not self.frames and os.path.splitext(name)[1].lower() in VIDEO_SUFFIXES and path.is_file():
                    found.setdefault(os.path.splitext(name)[0], path)
            self.listed[folder] = found
        return self.listed[folder]

    def __call__(self, key: str) -> Path | None:
        participant, video = key.split("/", 1)
        inner = "rgb_frames" if self.frames else "videos"
        for folder in (self.root / participant / inner, self.root / participant, self.root):
            if video in self.entries(folder):
                return self.entries(folder)[video]
        return None
