"""What every converter shares: reading annotation files with errors that name the file and line,
finding videos below ``--videos`` in one walk, and writing the listings, ``classes.txt``,
``missing.txt`` and the summary lines."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from harness.core.errors import UserError
from harness.data.listing import VideoRecord, label_ids, write_listing

VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".avi", ".mov")  #: what counts as a video below ``--videos``


@dataclass
class Converted:
    """A dataset as its annotations describe it: ``classes[i]`` is the name of class id ``i``; each
    split (``train``, ``val``, ``test``) lists ``(key, label)``, where a key is a file path
    relative to ``--videos``, or a bare file name or stem found anywhere below it (see
    :class:`VideoIndex`), and a label is a class id or, for multi-label data, a tuple of them.
    ``notes[split]`` is added to that split's summary line (what the converter left out)."""

    classes: list[str]
    splits: dict[str, list[tuple[str, int | tuple[int, ...]]]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)


def annotation_file(folder: Path, name: str, what: str) -> Path:
    """``folder/name``, or a :class:`UserError` saying which of ``what``'s files is missing."""
    path = folder / name
    if not path.is_file():
        raise UserError(f"{path}: not found; --annotations must be the folder holding {what}")
    return path


def read_json(path: Path) -> object:
    """The parsed JSON of ``path``; malformed JSON is a :class:`UserError` naming the file and line."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise UserError(f"{path}:{error.lineno}: not valid JSON ({error.msg}); use the official file") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text; use the official file") from None


def json_list(path: Path) -> list:
    """``path`` holds a JSON list (of entries), or a :class:`UserError` says so."""
    entries = read_json(path)
    if not isinstance(entries, list):
        raise UserError(f"{path}: expected a JSON list of entries, found a {type(entries).__name__}")
    return entries


def entry_field(entry: object, key: str, path: Path, index: int) -> object:
    """``entry[key]`` of the ``index``-th entry of a JSON list, or a :class:`UserError` naming it."""
    if not isinstance(entry, dict) or key not in entry:
        raise UserError(f"{path}: entry {index + 1} has no {key!r} field: {json.dumps(entry)[:120]}")
    return entry[key]


def read_csv_rows(path: Path, columns: tuple[str, ...], optional: tuple[str, ...] = ()
                  ) -> list[tuple[int, dict[str, str]]]:  # fmt: skip
    """``(line number, row)`` of a CSV file with a header holding ``columns`` (each non-empty on
    every row) and ``optional`` (columns that may be empty); a short row or a missing column is a
    :class:`UserError` naming the file (and line)."""
    try:
        return _csv_rows(path, columns, optional)
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text; use the official file") from None


def _csv_rows(path: Path, columns: tuple[str, ...], optional: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    with open(path, encoding="utf-8-sig", newline="") as handle:  # (-sig: a spreadsheet's byte-order mark)
        reader = csv.DictReader(handle)
        absent = [name for name in (*columns, *optional) if name not in (reader.fieldnames or [])]
        if absent:
            raise UserError(f"{path}:1: the header lacks {', '.join(absent)} (expected "
                            f"{','.join((*columns, *optional))})")  # fmt: skip
        rows = []
        for row in reader:
            if None in row.values() or any(not row[name] for name in columns):
                raise UserError(f"{path}:{reader.line_num}: expected the fields {','.join(columns)}, got "
                                f"{','.join(v for v in row.values() if isinstance(v, str))!r}")  # fmt: skip
            rows.append((reader.line_num, row))
    return rows


def csv_header(path: Path) -> list[str]:
    """The column names of a CSV file's first line."""
    with open(path, encoding="utf-8-sig", newline="") as handle:
        return next(csv.reader(handle), [])


def write_names(path: Path, names: list[str]) -> None:
    """``path`` with one name per line (a class-name file: line ``i`` names class id ``i``)."""
    path.write_text("".join(f"{name}\n" for name in names), encoding="utf-8")


def text_lines(path: Path) -> list[tuple[int, list[str]]]:
    """``(line number, words)`` of each non-blank line of a text file."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text; use the official file") from None
    return [(number, line.split()) for number, line in enumerate(lines, 1) if line.strip()]


class VideoIndex:
    """The video files below ``root``, found by one walk: a key is a path relative to ``root``, or
    else a file name or a stem (name without suffix) anywhere below it (the first one found wins)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.by_name: dict[str, Path] = {}
        self.by_stem: dict[str, Path] = {}
        for folder, subfolders, names in os.walk(root):
            subfolders.sort()
            for name in sorted(names):
                if name.lower().endswith(VIDEO_SUFFIXES):
                    path = Path(folder) / name
                    self.by_name.setdefault(name, path)
                    self.by_stem.setdefault(os.path.splitext(name)[0], path)

    def find(self, key: str) -> Path | None:
        """The video ``key`` names, or None when it is not on disk."""
        path = self.root / key
        if path.is_file():
            return path
        name = os.path.basename(key)
        return self.by_name.get(name) or self.by_stem.get(name)


def write_converted(converted: Converted, videos: Path, output: Path) -> tuple[list[str], int]:
    """Write ``output/<split>.csv`` (absolute paths), ``classes.txt`` and ``missing.txt`` (the
    ``split key`` of each annotated video not on disk; skipped in the listings); return the summary
    lines and the number of videos listed."""
    index = VideoIndex(videos)
    output.mkdir(parents=True, exist_ok=True)
    lines, missing, listed = [], [], 0
    for split, entries in converted.splits.items():
        records = []
        for key, label in entries:
            path = index.find(key)
            if path is None:
                missing.append(f"{split} {key}")
            else:
                records.append(VideoRecord(os.path.abspath(path), label))  # (links kept as given)
        write_listing(records, output / f"{split}.csv")
        classes = len({i for record in records for i in label_ids(record.label)})
        absent = len(entries) - len(records)
        note = f", {converted.notes[split]}" if split in converted.notes else ""
        lines.append(f"{split}: {len(records)} videos listed, {classes} classes, {absent} missing on disk{note}")
        listed += len(records)
    write_names(output / "classes.txt", converted.classes)
    write_names(output / "missing.txt", missing)
    lines.append(f"total: {listed} videos listed, {len(converted.classes)} classes, {len(missing)} missing on disk"
                 + (f" (see {output / 'missing.txt'})" if missing else "") + f"; wrote {output}")  # fmt: skip
    return lines, listed
