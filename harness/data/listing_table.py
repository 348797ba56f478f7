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

Lines whose fields are all plain (class ids, numbers; no quotes, no empty cells) are read a column
at a time with numpy (:func:`fast_table`), the others one line at a time (``csv``, or a split
from the right so that paths may hold spaces); a file the fast pass cannot read whole is read line
by line, which names the first wrong line. A segment listing costs the ``path label`` listing's
arrays plus 16 B per line for the segment, 4 B for a frame rate and 4 B per label set.
"""

from __future__ import annotations

import csv
import math
import os
import re
import warnings
from array import array

import numpy as np

from harness.data.listing_columns import Listing, csr
from harness.data.listing_parse import (
    COMMA,
    HASH,
    MAX_ID_DIGITS,
    NEWLINE,
    ODD_BREAKS,
    SPACE,
    TAB,
    ListingError,
    is_label,
    label_field,
    looks_like_header,
    parse_label,
)

PATH_WORDS = ("path", "video", "file", "filename", "name")
LABEL_WORDS = ("label", "labels", "class", "category", "target")
SECONDS, FRAMES = ("start", "end"), ("start_frame", "end_frame")
RESERVED = set(PATH_WORDS + LABEL_WORDS + SECONDS + FRAMES + ("fps",))
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_BLANKS = bytes.maketrans(b",\t", b"  ")  # commas and tabs part numbers as spaces do


def _fields(line: str, comma: bool, count: int) -> list[str]:
    """A line's fields: CSV (quotes allowed) or ``count`` fields split from the right."""
    if comma:
        return [field.strip() for field in next(csv.reader([line]))]
    return line.rsplit(None, count - 1)


def header_columns(line: str) -> list[str] | None:
    """The column names of a header row that asks for more than ``path label`` (None otherwise)."""
    fields = next(csv.reader([line])) if "," in line else line.split()  # (csv: a quoted header reads too)
    # the harness's own column names in any case; a label set keeps its name as written (meta.label_sets)
    words = [w.strip().lower() if w.strip().lower() in RESERVED else w.strip() for w in fields]
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
        ids, names = label_field(text, where)
        kind = "ids" if ids is not None else "names"
        if self.kind is None:
            self.kind, self.first_label = kind, (int(where.rsplit(":", 1)[1]), text)
        elif kind != self.kind:
            line, first = self.first_label
            raise ListingError(f"{where}: label {text!r}: the listing mixes class ids and class names "
                               f"({where.rsplit(':', 1)[0]}:{line} has {first!r})")  # fmt: skip
        return ids if ids is not None else tuple(self.names.setdefault(name, len(self.names)) for name in names)

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
        if end < start:  # (equal: an instant, read as its one frame)
            raise ListingError(f"{where}: the segment ends ({names[1]} {end_text}) before it starts "
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


def first_content_line(raw: bytes) -> tuple[int, str] | None:
    """``(line number, text)`` of the first line that is neither blank nor a ``#`` comment (a BOM
    dropped), or None; only the bytes up to it are looked at."""
    position, number = (3 if raw.startswith(b"\xef\xbb\xbf") else 0), 1
    while position < len(raw):
        end = raw.find(b"\n", position)
        end = len(raw) if end < 0 else end
        line = raw[position:end].strip()
        if line and not line.startswith(b"#"):
            return number, line.decode("utf-8", errors="replace")
        position, number = end + 1, number + 1
    return None


def table_of(raw: bytes) -> tuple[bool, list[str] | None]:
    """Whether a text listing's bytes are a table (:func:`parse_table`) and its header's columns
    (None: headerless ``path label start end``)."""
    first = first_content_line(raw)
    if first is None:
        return False, None
    line = first[1]
    columns = header_columns(line)
    if columns is not None:
        return True, columns
    return headerless_segments(line), None


def read_table(raw: bytes, source: str, columns: list[str] | None) -> Listing:
    """A listing of header-named columns from a file's bytes (``columns`` None: headerless
    ``path label start end``): :func:`fast_table`, else line by line (:func:`parse_table`)."""
    first = first_content_line(raw)
    if columns is not None and first is not None:
        check_columns(columns, f"{source}:{first[0]}")
    fast = fast_table(raw, source, columns, first[1]) if first is not None else None
    return fast if fast is not None else parse_table(raw.decode("utf-8").removeprefix("\ufeff"), source, columns)


def fast_table(raw: bytes, source: str, columns: list[str] | None, first: str) -> Listing | None:
    """The listing when every content line is plain: the path, then ``k - 1`` fields of digits
    (labels, label sets) or numbers (times, rates), split by commas or by the last ``k - 1`` runs
    of one space or tab; None when any line is not (quotes, class names, several labels, empty
    cells, a value out of range...), and the line parser decides. ``first``: the first content
    line (the header, or the first line of a headerless listing)."""
    if b'"' in raw or b"\r" in raw or any(mark[:1] in raw and mark in raw for mark in ODD_BREAKS):
        return None
    header_seen = columns is not None
    comma = "," in first if header_seen else ("," in first and len(_fields(first, True, 4)) == 4)
    columns = columns or ["path", "label", "start", "end"]
    count = len(columns)
    data = np.frombuffer(raw, dtype=np.uint8)
    begin = 3 if raw.startswith(b"\xef\xbb\xbf") else 0
    newlines = np.flatnonzero(data == NEWLINE)
    starts = np.concatenate(([begin], newlines + 1)).astype(np.int64)
    ends = np.concatenate((newlines, [len(data)])).astype(np.int64)
    filled = ends > starts
    first_char = np.where(filled, data[np.minimum(starts, len(data) - 1)], NEWLINE)
    lines = np.flatnonzero(filled & (first_char != HASH))
    if header_seen:
        lines = lines[1:]  # the header row
    if not len(lines) or ((first_char[lines] == SPACE) | (first_char[lines] == TAB)).any():
        return None
    line_starts, line_ends = starts[lines], ends[lines]
    separators = np.flatnonzero(data == COMMA) if comma else np.flatnonzero((data == SPACE) | (data == TAB))
    last = np.searchsorted(separators, line_ends) - 1  # each line's last separator
    path_end_index = last - (count - 2)
    if (path_end_index < 0).any():
        return None
    bounds = [separators[path_end_index + j] for j in range(count - 1)] + [line_ends]  # field j ends at bounds[j]
    if (bounds[0] <= line_starts).any():
        return None
    if comma and (np.searchsorted(separators, line_starts) != path_end_index).any():
        return None  # a comma in the path: the line parser's csv decides
    for j in range(1, count):
        field_start, field_end = bounds[j - 1] + 1, bounds[j]
        if (field_end <= field_start).any():
            return None  # an empty cell (or two separators in a row)
        if _integer_column(columns[j]) and not _all_digits(data, field_start, field_end - field_start):
            return None  # a class name, a sign, a decimal point: the line parser names it
    values = _numbers(raw, bounds[0] + 1, line_ends, len(lines) * (count - 1))
    if values is None:
        return None
    table = values.reshape(len(lines), count - 1)
    return _assemble(source, data, columns, lines, line_starts, bounds[0], table)


def _all_digits(data: np.ndarray, first: np.ndarray, length: np.ndarray) -> bool:
    """Whether every field ``data[first : first + length]`` is 1 to 9 digits (an ``int32`` id)."""
    if (length > MAX_ID_DIGITS).any():
        return False
    for k in range(int(length.max())):
        byte = data[np.minimum(first + k, len(data) - 1)]
        if ((k < length) & ((byte < 48) | (byte > 57))).any():
            return False
    return True


def _integer_column(name: str) -> bool:
    return name in LABEL_WORDS or name in FRAMES or name not in RESERVED


def _numbers(raw: bytes, field_starts: np.ndarray, line_ends: np.ndarray, expected: int) -> np.ndarray | None:
    """Every number of the lines' fields after the path (``expected`` of them), parsed by numpy."""
    # a slice per line joined by spaces (measured: 3x faster than a numpy gather of the bytes)
    text = b" ".join([raw[a:b] for a, b in zip(field_starts.tolist(), line_ends.tolist())]).translate(_BLANKS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a text numpy cannot read to its end raises instead of a short array
        try:
            values = np.fromstring(text, dtype=np.float64, sep=" ")
        except (ValueError, DeprecationWarning):
            return None
    if len(values) != expected or not np.isfinite(values).all():
        return None
    return values


def _assemble(source: str, data: np.ndarray, columns: list[str], lines: np.ndarray, line_starts: np.ndarray,
              path_ends: np.ndarray, table: np.ndarray) -> Listing | None:  # fmt: skip
    """The listing of :func:`fast_table`'s columns, or None when a value is out of range."""
    roles = _Columns(columns)
    integer = [j for j in range(1, len(columns)) if _integer_column(columns[j])]
    if integer and (table[:, [j - 1 for j in integer]] >= 2**31).any():
        return None
    sets = table[:, [j - 1 for j in roles.sets]].astype(np.int32) if roles.sets else None
    labels = sets[:, 0].copy() if sets is not None else table[:, roles.label - 1].astype(np.int32)
    listing = Listing(source, os.path.abspath(os.path.dirname(source) or "."), data, line_starts,
                      (path_ends - line_starts).astype(np.int32), labels, (lines + 1).astype(np.int32))  # fmt: skip
    if roles.segment is not None:
        segments = table[:, [roles.segment[0] - 1, roles.segment[1] - 1]].copy()
        if (segments[:, 0] < 0).any() or (segments[:, 1] < segments[:, 0]).any():
            return None
        listing.segments, listing.segment_unit = segments, "frames" if roles.frames else "seconds"
    if roles.fps is not None:
        rates = table[:, roles.fps - 1]
        if (rates <= 0).any():
            return None
        listing.rates = rates.astype(np.float32)
    if sets is not None:
        listing.label_sets, listing.set_labels = [columns[j] for j in roles.sets], sets
    return listing


def parse_table(text: str, source: str, columns: list[str] | None) -> Listing:
    """A listing of header-named columns (``columns`` None: headerless ``path label start end``),
    read line by line."""
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
