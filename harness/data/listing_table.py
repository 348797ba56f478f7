"""Listings with more columns than ``path label``: segments of long videos, a frame rate per line,
several label sets.

A header row names the columns (CSV, or whitespace separated), the path first::

    path,label,start,end                      # a segment [start, end) of the video, in seconds
    path,label,start_frame,end_frame          # ... in frames (end exclusive)
    path,verb,noun,action,start,end           # three label sets (EPIC-KITCHENS-100)
    path,label,fps                            # a frame folder's frame rate on each line

Known column names: the path (``path``, ``video``, ``file``, ``filename``, ``name``), the label
(``label``, ``labels``, ``class``, ``category``, ``target``: class ids, class names, or several ids
joined by commas as in any listing), ``start`` / ``end`` (seconds) or ``start_frame`` /
``end_frame`` (frames), and ``fps``. Every other column is a **label set** of class ids, allowed
only without a ``label`` column. An empty start and end means the whole video.

Without a header, a line of four fields whose last two are numbers is ``path label start end``
(seconds); a header makes the listing unambiguous.

Lines are read one at a time (``csv`` or a split from the right, so paths may hold spaces) into
flat numpy columns: a segment listing costs the ``path label`` listing's arrays plus 16 B per
line for the segment, 4 B for a frame rate and 4 B per label set.
"""

from __future__ import annotations

import csv
import math
import os
import re
from array import array

import numpy as np

from harness.data.listing_columns import Listing, csr
from harness.data.listing_parse import ListingError, is_label, looks_like_header, parse_label

PATH_WORDS = ("path", "video", "file", "filename", "name")
LABEL_WORDS = ("label", "labels", "class", "category", "target")
SECONDS, FRAMES = ("start", "end"), ("start_frame", "end_frame")
RESERVED = set(PATH_WORDS + LABEL_WORDS + SECONDS + FRAMES + ("fps",))
_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


def _fields(line: str, comma: bool, count: int) -> list[str]:
    """A line's fields: CSV (quotes allowed) or ``count`` fields split from the right."""
    if comma:
        return [field.strip() for field in next(csv.reader([line]))]
    return line.rsplit(None, count - 1)


def header_columns(line: str) -> list[str] | None:
    """The column names of a header row that asks for more than ``path label`` (None otherwise)."""
    words = [w.strip().lower() for w in (line.split(",") if "," in line else line.split())]
    if len(words) < 2 or words[0] not in PATH_WORDS or not all(_NAME.match(w) for w in words):
        return None
    if len(words) == 2 and (words[1] in LABEL_WORDS or looks_like_header(line)):
        return None  # the plain header of a plain listing (``path,label``, ``filename,class_id``)
    return words


def _number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def headerless_segments(line: str) -> bool:
    """Whether a first content line without a header reads as ``path label start end``."""
    comma = "," in line and len(_fields(line, True, 4)) == 4
    fields = _fields(line, comma, 4)
    return len(fields) == 4 and is_label(fields[1]) and _number(fields[2]) and _number(fields[3])


def check_columns(columns: list[str], where: str) -> None:
    """Raise a :class:`ListingError` naming the header line when its columns do not make a listing."""
    seen = set()
    for column in columns:
        if column in seen:
            raise ListingError(f"{where}: column {column!r} appears twice in the header")
        seen.add(column)
    if any(c in PATH_WORDS for c in columns[1:]):
        raise ListingError(f"{where}: only the first column is the path; the header is {','.join(columns)}")
    labels = [c for c in columns if c in LABEL_WORDS]
    sets = [c for c in columns[1:] if c not in RESERVED]
    if len(labels) > 1:
        raise ListingError(f"{where}: two label columns ({', '.join(labels)}); name each label set instead")
    if labels and sets:
        raise ListingError(f"{where}: column {sets[0]!r} is not one this harness knows (with a {labels[0]!r} "
                           f"column, columns are path, label, start, end, start_frame, end_frame, fps); several "
                           "label sets are named columns without a label column")  # fmt: skip
    if not labels and not sets:
        raise ListingError(f"{where}: the header names no label column (label, or one column per label set)")
    for pair in (SECONDS, FRAMES):
        if (pair[0] in seen) != (pair[1] in seen):
            raise ListingError(f"{where}: the header has {pair[0] if pair[0] in seen else pair[1]!r} without "
                               f"{pair[1] if pair[0] in seen else pair[0]!r}")  # fmt: skip
    if set(SECONDS) <= seen and set(FRAMES) <= seen:
        raise ListingError(f"{where}: a segment is given in seconds (start, end) or in frames (start_frame, "
                           "end_frame), not both")  # fmt: skip


class _Columns:
    """The columns of a table listing as they are read (compact arrays, no object per line)."""

    def __init__(self, columns: list[str]) -> None:
        self.columns = columns
        self.label = next((i for i, c in enumerate(columns) if c in LABEL_WORDS), None)
        self.sets = [i for i, c in enumerate(columns) if i and c not in RESERVED]
        unit = SECONDS if SECONDS[0] in columns else FRAMES if FRAMES[0] in columns else None
        self.segment = (columns.index(unit[0]), columns.index(unit[1])) if unit else None
        self.frames = unit == FRAMES
        self.fps = columns.index("fps") if "fps" in columns else None
        self.paths: list[bytes] = []
        self.lines, self.set_ids = array("i"), array("i")
        self.starts, self.ends, self.rates = array("d"), array("d"), array("f")
        self.per_line: list[tuple] = []  # the label column's ids or names (a small tuple per line)
        self.names: dict[str, int] = {}
        self.kind: str | None = None  # "ids" or "names" once the first label is read
        self.first_label: tuple[int, str] | None = None

    def add(self, fields: list[str], number: int, where: str) -> None:
        if len(fields) != len(self.columns) or not fields[0]:
            raise ListingError(f"{where}: expected {len(self.columns)} columns ({','.join(self.columns)}), got "
                               f"{len(fields)}")  # fmt: skip
        self.paths.append(fields[0].encode("utf-8"))
        self.lines.append(number)
        if self.label is not None:
            self.per_line.append(self._label(fields[self.label], where))
        for index in self.sets:
            text = fields[index]
            if not text.isdigit():
                raise ListingError(f"{where}: column {self.columns[index]!r}: {text!r} is not a class id (a label "
                                   "set takes class ids; its names go in a class-names file)")  # fmt: skip
            self.set_ids.append(parse_label(text, f"{where}: column {self.columns[index]!r}"))
        if self.segment is not None:
            self._add_segment(fields[self.segment[0]], fields[self.segment[1]], where)
        if self.fps is not None:
            if not fields[self.fps]:
                self.rates.append(0.0)  # none given on this line
                return
            rate = _float(fields[self.fps], f"{where}: column 'fps'")
            if rate <= 0:
                raise ListingError(f"{where}: column 'fps': {rate:g} is not a frame rate (> 0)")
            self.rates.append(rate)

    def _label(self, text: str, where: str) -> tuple:
        parts = [part.strip() for part in text.split(",")]
        if not text or not all(parts) or not all(is_label(p) or p.lstrip("-").isdigit() for p in parts):
            parse_label(text, where)  # names what is wrong with it
        kind = "ids" if all(p.lstrip("-").isdigit() for p in parts) else "names"
        if self.kind is None:
            self.kind, self.first_label = kind, (int(where.rsplit(":", 1)[1]), text)
        elif kind != self.kind:
            line, first = self.first_label
            raise ListingError(f"{where}: label {text!r}: the listing mixes class ids and class names "
                               f"({where.rsplit(':', 1)[0]}:{line} has {first!r})")  # fmt: skip
        if kind == "ids":
            return tuple(parse_label(p, where) for p in parts)
        return tuple(self.names.setdefault(p, len(self.names)) for p in parts)

    def _add_segment(self, start_text: str, end_text: str, where: str) -> None:
        if not start_text and not end_text:
            self.starts.append(math.nan)  # the whole video
            self.ends.append(math.nan)
            return
        names = FRAMES if self.frames else SECONDS
        start = _float(start_text, f"{where}: column {names[0]!r}")
        end = _float(end_text, f"{where}: column {names[1]!r}")
        if self.frames and (start != int(start) or end != int(end)):
            raise ListingError(f"{where}: frame numbers are whole numbers, got {start_text} and {end_text}")
        if start < 0:
            raise ListingError(f"{where}: column {names[0]!r}: {start_text} is negative")
        if end <= start:
            raise ListingError(f"{where}: the segment ends ({names[1]} {end_text}) at or before it starts "
                               f"({names[0]} {start_text})")  # fmt: skip
        self.starts.append(start)
        self.ends.append(end)

    def listing(self, source: str, base: str) -> Listing:
        if not self.paths:
            raise ListingError(f"{source}: listing has no videos")
        lengths = np.fromiter((len(p) for p in self.paths), dtype=np.int32, count=len(self.paths))
        starts = np.zeros(len(lengths), dtype=np.int64)
        np.cumsum(lengths[:-1], out=starts[1:])
        text = np.frombuffer(b"".join(self.paths), dtype=np.uint8).copy()
        self.paths = []
        set_labels = None
        if self.sets:
            set_labels = np.frombuffer(self.set_ids, dtype=np.int32).reshape(-1, len(self.sets)).copy()
            labels = set_labels[:, 0].copy()
        else:
            labels = np.fromiter((p[0] for p in self.per_line), dtype=np.int32, count=len(self.per_line))
        listing = Listing(source, base, text, starts, lengths, labels, np.frombuffer(self.lines, np.int32).copy(),
                          list(self.names) if self.kind == "names" else None)  # fmt: skip
        if any(len(p) != 1 for p in self.per_line):
            listing.multi_offsets, listing.multi_labels = csr(self.per_line)
        if self.segment is not None:
            listing.segments = np.stack((np.frombuffer(self.starts), np.frombuffer(self.ends)), axis=1)
            listing.segment_unit = "frames" if self.frames else "seconds"
        if self.fps is not None:
            listing.rates = np.frombuffer(self.rates, dtype=np.float32).copy()
        if self.sets:
            listing.label_sets = [self.columns[i] for i in self.sets]
            listing.set_labels = set_labels
        return listing


def _float(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ListingError(f"{where}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ListingError(f"{where}: {text!r} is not a finite number")
    return value


def first_content_line(raw: bytes) -> str | None:
    """The first line that is neither blank nor a ``#`` comment (a BOM dropped), or None; only
    the bytes up to it are looked at."""
    position = 3 if raw.startswith(b"\xef\xbb\xbf") else 0
    while position < len(raw):
        end = raw.find(b"\n", position)
        end = len(raw) if end < 0 else end
        line = raw[position:end].strip()
        if line and not line.startswith(b"#"):
            return line.decode("utf-8", errors="replace")
        position = end + 1
    return None


def table_of(raw: bytes) -> tuple[bool, list[str] | None]:
    """Whether a text listing's bytes are a table (:func:`parse_table`) and its header's columns
    (None: headerless ``path label start end``)."""
    line = first_content_line(raw)
    if line is None:
        return False, None
    columns = header_columns(line)
    if columns is not None:
        return True, columns
    return headerless_segments(line), None


def parse_table(text: str, source: str, columns: list[str] | None) -> Listing:
    """A listing of header-named columns (``columns`` None: headerless ``path label start end``)."""
    base = os.path.abspath(os.path.dirname(source) or ".")
    header_seen = columns is not None
    columns = columns or ["path", "label", "start", "end"]
    table: _Columns | None = None
    comma = None
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source}:{number}"
        if table is None:
            check_columns(columns, where)
            table = _Columns(columns)
            comma = "," in line if header_seen else ("," in line and len(_fields(line, True, 4)) == 4)
            if header_seen:
                continue
        table.add(_fields(line, comma, len(columns)), number, where)
    if table is None:
        raise ListingError(f"{source}: listing has no videos")
    return table.listing(source, base)
