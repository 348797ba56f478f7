"""A listing held as a few numpy arrays: no Python object per line.

A 10M-line listing read into ``VideoRecord`` objects costs ~360 B per line per process, and
forked DataLoader workers copy those objects page by page as they touch them (reference counts
are writes). :class:`Listing` keeps the same information in flat arrays: the path text of all
lines in one ``uint8`` buffer (the listing file's own bytes: no copy is made to pack them) with an
``int64`` start and an ``int32`` length per line, one ``int32`` label per line (plus CSR
arrays for multi-label lines), and the ``int32`` line number for messages. Reading an element
builds a ``str`` on the fly and writes nothing shared, so workers keep sharing the parent's pages.
Relative paths are joined to the listing's folder as text (``os.path``), never with a file-system
call per line.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class VideoRecord:
    """One labelled video (what iterating a :class:`Listing` yields; built on demand).

    Attributes:
        path: absolute path (or URL understood by the decoder) of the video file.
        label: integer class id, ``>= 0`` (-1 until a class name is given its id); a tuple of
            ids for a line with several labels (multi-label data).
        where: ``listing:line`` it came from (for messages; not part of equality).
        name: the class name when the listing names classes instead of numbering them (a
            tuple of names for several labels).
        segment: ``(start, end)`` of the part of the video meant (``end`` exclusive), in
            :attr:`segment_unit`; None: the whole video.
        segment_unit: ``seconds`` or ``frames``.
        fps: the frame rate given on the line (a frame folder's); None: the video's own.
    """

    path: str
    label: int | tuple[int, ...]
    where: str = field(default="", compare=False)
    name: str | tuple[str, ...] | None = None
    segment: tuple[float, float] | None = None
    segment_unit: str = "seconds"
    fps: float | None = None


def label_ids(label: int | tuple[int, ...] | list[int]) -> tuple[int, ...]:
    """The class ids of a label (one, or several for multi-label data; a list is what JSON and
    the gathered evaluation rows hold)."""
    return tuple(label) if isinstance(label, (tuple, list)) else (label,)


def pack(pieces: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(text, starts, lengths)`` of byte strings laid end to end."""
    lengths = np.fromiter((len(p) for p in pieces), dtype=np.int32, count=len(pieces))
    starts = np.zeros(len(pieces), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    return np.frombuffer(b"".join(pieces), dtype=np.uint8).copy(), starts, lengths


@dataclass
class Listing:
    """Labelled videos of one listing file, as columns.

    Attributes:
        source: the listing file (for messages).
        base: absolute folder that relative paths are joined to (``""``: paths are taken as they
            are, as for records made in code).
        text: ``uint8`` text (UTF-8) holding every line's path as written in the file (for a text
            listing: the file's bytes themselves, labels and all).
        starts, lengths: ``int64 [N]``, ``int32 [N]``: line ``i``'s path is
            ``text[starts[i] : starts[i] + lengths[i]]``.
        labels: ``int32 [N]``: the class id (or, when :attr:`names` is set, the index into it);
            for a multi-label line, its first label.
        lines: ``int32 [N]``: the line number (1-based) or, for NPY listings, the row.
        names: class names the labels index when the listing names classes (None: class ids).
        multi_offsets, multi_labels: CSR arrays of every line's labels when some line has
            several (``int64 [N + 1]`` and ``int32 [M]``), else None.
        row_word: ``""`` for text listings (``file:12``), ``"row "`` for NPY (``file:row 12``).
        segments: ``float64 [N, 2]`` start and end of each line's segment in :attr:`segment_unit`
            (NaN: the whole video), or None when no line has one.
        segment_unit: ``seconds`` or ``frames`` (``start_frame`` / ``end_frame`` columns).
        rates: ``float32 [N]`` frame rate given on each line (``fps`` column), or None.
        label_sets: names of the label sets (columns of a listing such as ``path,verb,noun,...``),
            or None; then :attr:`labels` holds the first set's ids.
        set_labels: ``int32 [N, S]`` every line's class id in each label set, or None.
    """

    source: str
    base: str
    text: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray
    labels: np.ndarray
    lines: np.ndarray
    names: list[str] | None = None
    multi_offsets: np.ndarray | None = None
    multi_labels: np.ndarray | None = None
    row_word: str = ""
    segments: np.ndarray | None = None
    segment_unit: str = "seconds"
    rates: np.ndarray | None = None
    label_sets: list[str] | None = None
    set_labels: np.ndarray | None = None

    # ------------------------------------------------------------------------ one element
    def __len__(self) -> int:
        return len(self.labels)

    def raw_path(self, index: int) -> str:
        """Line ``index``'s path as written in the listing."""
        start = self.starts[index]
        return self.text[start : start + self.lengths[index]].tobytes().decode("utf-8")

    def path(self, index: int) -> str:
        """Line ``index``'s path: absolute, URLs as they are, relative ones joined to :attr:`base`
        (``..`` folded as text; no file-system call)."""
        path = self.raw_path(index)
        if not self.base or "://" in path or os.path.isabs(path):
            return path
        return os.path.normpath(os.path.join(self.base, path))

    def label_of(self, index: int) -> tuple[int, ...]:
        """The label ids (or name indices) of line ``index``."""
        if self.multi_offsets is None:
            return (int(self.labels[index]),)
        return tuple(self.multi_labels[self.multi_offsets[index] : self.multi_offsets[index + 1]].tolist())

    def label(self, index: int) -> int | tuple[int, ...]:
        """Line ``index``'s class id, or a tuple of them for a line with several (-1 while the
        listing names classes: see :func:`harness.data.listing.name_labels`); with label sets,
        the tuple of its id in each set."""
        if self.set_labels is not None:
            return tuple(self.set_labels[index].tolist())
        ids = self.label_of(index)
        if self.names is not None:
            ids = (-1,) * len(ids)
        return ids if len(ids) > 1 else ids[0]

    def name(self, index: int) -> str | tuple[str, ...] | None:
        """Line ``index``'s class name(s) when the listing names classes, else None."""
        if self.names is None:
            return None
        names = tuple(self.names[i] for i in self.label_of(index))
        return names if len(names) > 1 else names[0]

    def segment(self, index: int) -> tuple[float, float] | None:
        """Line ``index``'s segment ``(start, end)`` in :attr:`segment_unit`, or None (whole video)."""
        if self.segments is None or math.isnan(self.segments[index, 0]):
            return None
        start, end = self.segments[index].tolist()
        return start, end

    def frame_rate(self, index: int) -> float | None:
        """The frame rate given on line ``index`` (``fps`` column), or None."""
        return None if self.rates is None else float(self.rates[index]) or None  # 0: none given

    def where(self, index: int) -> str:
        """``listing:line`` of element ``index`` (for messages; the path for records made in code)."""
        if not self.source:
            return self.path(index)
        return f"{self.source}:{self.row_word}{int(self.lines[index])}"

    def record(self, index: int) -> VideoRecord:
        """Element ``index`` as a :class:`VideoRecord` (built on demand)."""
        return VideoRecord(self.path(index), self.label(index), self.where(index), self.name(index),
                           self.segment(index), self.segment_unit, self.frame_rate(index))  # fmt: skip

    def __getitem__(self, index: int) -> VideoRecord:
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        return self.record(index % len(self))

    def __iter__(self) -> Iterator[VideoRecord]:
        return (self.record(i) for i in range(len(self)))

    def paths(self) -> Iterator[str]:
        """Every path, in listing order (built one at a time)."""
        return (self.path(i) for i in range(len(self)))

    # ------------------------------------------------------------------------- all at once
    def all_ids(self) -> np.ndarray:
        """Every label id (name index) of every line, ``int64`` (a multi-label line adds several)."""
        flat = self.labels if self.multi_offsets is None else self.multi_labels
        return flat.astype(np.int64)

    def lines_per_label(self) -> np.ndarray:
        """For each entry of :meth:`all_ids`, the element it belongs to."""
        if self.multi_offsets is None:
            return np.arange(len(self), dtype=np.int64)
        return np.repeat(np.arange(len(self), dtype=np.int64), np.diff(self.multi_offsets))

    def label_counts(self) -> np.ndarray:
        """Labels per element, ``int64 [N]`` (1 unless multi-label)."""
        if self.multi_offsets is None:
            return np.ones(len(self), dtype=np.int64)
        return np.diff(self.multi_offsets)

    @property
    def named(self) -> bool:
        """Whether the labels are class names still waiting for their ids."""
        return self.names is not None

    def with_ids(self, mapping: np.ndarray) -> Listing:
        """This listing with every name index ``k`` replaced by the class id ``mapping[k]``."""
        multi = None if self.multi_labels is None else mapping[self.multi_labels].astype(np.int32)
        return Listing(self.source, self.base, self.text, self.starts, self.lengths,
                       mapping[self.labels].astype(np.int32), self.lines, None, self.multi_offsets, multi,
                       self.row_word, self.segments, self.segment_unit, self.rates, self.label_sets,
                       self.set_labels)  # fmt: skip

    def select_sets(self, names: Sequence[str]) -> Listing:
        """This listing with the label sets ``names`` only, in that order (a run may train some of
        a listing's sets, or name them in another order); itself when they are already so."""
        if self.label_sets is None or list(names) == self.label_sets:
            return self
        columns = [self.label_sets.index(name) for name in names]
        chosen = np.ascontiguousarray(self.set_labels[:, columns])
        return Listing(self.source, self.base, self.text, self.starts, self.lengths, chosen[:, 0].copy(), self.lines,
                       None, None, None, self.row_word, self.segments, self.segment_unit, self.rates, list(names),
                       chosen)  # fmt: skip

    def nbytes(self) -> int:
        """Bytes held by the arrays (what a listing costs a process)."""
        arrays = (self.text, self.starts, self.lengths, self.labels, self.lines, self.multi_offsets, self.multi_labels,
                  self.segments, self.rates, self.set_labels)  # fmt: skip
        return sum(a.nbytes for a in arrays if a is not None)

    @classmethod
    def from_records(cls, records: Sequence[VideoRecord], source: str = "", label_sets: list[str] | None = None
                     ) -> Listing:  # fmt: skip
        """A listing of records made in code (tests, tools); their paths are taken as they are.
        ``label_sets``: the names of the sets each record's label tuple gives one id of."""
        text, starts, lengths = pack([r.path.encode("utf-8") for r in records])
        named = any(r.name is not None for r in records)
        names: list[str] = []
        if named:
            names = sorted({n for r in records for n in label_ids(r.name)})  # type: ignore[arg-type]
            index = {n: i for i, n in enumerate(names)}
            per_line = [tuple(index[n] for n in label_ids(r.name)) for r in records]  # type: ignore[arg-type]
        else:
            per_line = [label_ids(r.label) for r in records]
        lines = np.array([_line_of(r.where, i) for i, r in enumerate(records)], dtype=np.int32)
        listing = cls(source, "", text, starts, lengths, np.array([p[0] for p in per_line], np.int32),
                      lines, names if named else None)  # fmt: skip
        if label_sets is not None:
            if any(len(p) != len(label_sets) for p in per_line):
                raise ValueError(f"every record needs one label in each of the label sets {label_sets}")
            listing.label_sets = list(label_sets)
            listing.set_labels = np.array(per_line, dtype=np.int32).reshape(len(records), len(label_sets))
        elif any(len(p) != 1 for p in per_line):
            listing.multi_offsets, listing.multi_labels = csr(per_line)
        if any(r.segment is not None for r in records):
            units = {r.segment_unit for r in records if r.segment is not None}
            if len(units) > 1:
                raise ValueError("records mix segments in seconds and in frames")
            listing.segment_unit = units.pop()
            listing.segments = np.array([r.segment or (math.nan, math.nan) for r in records], dtype=np.float64)
        if any(r.fps is not None for r in records):
            listing.rates = np.array([r.fps or 0.0 for r in records], dtype=np.float32)
        return listing


def csr(per_line: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """``(offsets int64 [N + 1], flat int32)`` of a list of label tuples."""
    offsets = np.zeros(len(per_line) + 1, dtype=np.int64)
    np.cumsum([len(p) for p in per_line], out=offsets[1:])
    flat = np.fromiter((i for p in per_line for i in p), dtype=np.int32, count=int(offsets[-1]))
    return offsets, flat


def _line_of(where: str, index: int) -> int:
    tail = where.rsplit(":", 1)[-1].removeprefix("row ")
    return int(tail) if tail.isdigit() else index + 1
