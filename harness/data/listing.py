"""Labelled video listings: CSV/space-separated text files and NPY arrays of paths.

A listing names one video per line with its integer class label. The V-JEPA 2 format is
``path/to/video.mp4 <label>`` (space separated, no header); comma-separated lines and a
header row are accepted too because spreadsheet tools and pandas write those. A multi-label
listing (``meta.multi_label``, Charades-style) gives several labels joined by commas:
``path/to/video.mp4 3,17,42`` (or a quoted CSV field, ``path,"3,17,42"``). Relative paths
are joined to the folder of the listing file, so a dataset folder can be moved whole.

A listing is read into a :class:`Listing`: columns in numpy arrays, no Python object per line
(see :mod:`harness.data.listing_columns`), parsed by :mod:`harness.data.listing_parse`.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from harness.data.listing_columns import Listing, VideoRecord, label_ids
from harness.data.listing_parse import HEADER_WORDS, ListingError, parse_label, parse_text
from harness.data.listing_table import read_table, table_of

__all__ = ["HEADER_WORDS", "Listing", "ListingError", "VideoRecord", "format_label", "label_ids", "name_labels",
           "names_of_label", "read_listing", "read_npy_listing", "read_text_listing", "write_listing"]  # fmt: skip


def names_of_label(label: int | tuple[int, ...] | list[int], names: list[str]) -> str:
    """The class names of a label, joined by ``;`` (``walk;run``)."""
    return ";".join(names[i] for i in label_ids(label))


def format_label(label: int | tuple[int, ...]) -> str:
    """A label as a listing or shard writes it: ``3``, or ``3,17,42``."""
    return ",".join(str(i) for i in label_ids(label))


def read_text_listing(listing: str | Path) -> Listing:
    """Parse a CSV / space-separated listing.

    The first line is a header only when it is made of header words (``path,label``, ``video
    class``). Labels are class ids, or class names throughout (:attr:`Listing.names`; the ids
    are given later, see :func:`name_labels`). A UTF-8 byte-order mark is dropped. Blank lines
    and lines starting with ``#`` are ignored.

    Raises:
        ListingError: a malformed line (naming ``file:line``) or a file that is not UTF-8 text.
    """
    raw = Path(listing).read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise ListingError(f"{listing}:{line}: not UTF-8 text (byte {error.start}); save it as UTF-8") from None
    is_table, columns = table_of(raw)
    if is_table:
        return read_table(raw, str(listing), columns)
    return parse_text(raw, str(listing))


def name_labels(listing: Listing | Sequence[VideoRecord], names: list[str], source: str) -> Listing:
    """The listing with its class names turned into their ids in ``names`` (a listing with ids
    comes back as it is; records made in code become a :class:`Listing`).

    Raises:
        ListingError: a name that is not among ``names`` (naming ``file:line``).
    """
    if not isinstance(listing, Listing):
        listing = Listing.from_records(list(listing))
    if listing.names is None:
        return listing
    ids = {name: index for index, name in enumerate(names)}
    mapping = np.array([ids.get(name, -1) for name in listing.names], dtype=np.int64)
    unknown = np.flatnonzero(mapping < 0)
    if len(unknown):
        flat, owner = listing.all_ids(), listing.lines_per_label()
        first = int(owner[np.flatnonzero(np.isin(flat, unknown))[0]])
        name = next(n for n in label_ids(listing.name(first)) if n not in ids)
        raise ListingError(f"{listing.where(first)}: class {name!r} is not one of the {len(names)} classes of {source}")
    return listing.with_ids(mapping)


def read_npy_listing(listing: str | Path) -> Listing:
    """Read an NPY listing: a 1-D array of paths (label 0) or an ``[N, 2]`` array of path, label."""
    listing = Path(listing)
    try:
        array = np.load(listing, allow_pickle=False)
    except (ValueError, OSError) as error:
        raise ListingError(f"{listing}: not a readable NPY array of paths ({error})") from None
    if array.ndim == 2 and array.shape[1] == 2:
        paths, label_text = array[:, 0], array[:, 1]
        try:
            labels = label_text.astype(np.int64)
        except ValueError:
            labels = None
        if labels is None or (labels < 0).any():
            for row, text in enumerate(label_text.tolist()):
                parse_label(str(text), f"{listing}:row {row}")  # raises naming the first bad row
    elif array.ndim == 1:
        paths, labels = array, np.zeros(len(array), dtype=np.int64)
    else:
        raise ListingError(f"{listing}: expected a 1-D array of paths or [N, 2] of (path, label), got shape "
                           f"{array.shape}")  # fmt: skip
    encoded = np.char.encode(paths.astype(str), "utf-8")
    lengths = np.char.str_len(encoded).astype(np.int64)
    width = encoded.dtype.itemsize
    if width:
        text = encoded.view(np.uint8).reshape(len(encoded), width)[np.arange(width) < lengths[:, None]]
    else:
        text = np.zeros(0, dtype=np.uint8)
    starts = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)[: len(lengths)]
    base = os.path.abspath(str(listing.parent))
    return Listing(str(listing), base, text, starts, lengths.astype(np.int32), labels.astype(np.int32),
                   np.arange(len(paths), dtype=np.int32), row_word="row ")  # fmt: skip


def read_listing(listing: str | Path) -> Listing:
    """Read any supported listing (``.npy`` or text) into a :class:`Listing`.

    Raises:
        ListingError: the file is missing, empty, or has a malformed line.
    """
    listing = Path(listing)
    if listing.is_dir():
        raise ListingError(f"{listing} is a folder, not a listing file; give a .csv, .txt or .npy listing")
    if not listing.is_file():
        raise ListingError(f"{listing}: listing file not found")
    columns = read_npy_listing(listing) if listing.suffix == ".npy" else read_text_listing(listing)
    if not len(columns):
        raise ListingError(f"{listing}: listing has no videos")
    return columns


def write_listing(records: Sequence[VideoRecord] | Listing, listing: str | Path,
                  label_sets: list[str] | None = None) -> None:  # fmt: skip
    """Write records in the V-JEPA 2 format (``path label`` per line, space separated); records
    with segments or frame rates, or ``label_sets`` (each record's label one id per set), as a
    CSV table with a header (:mod:`harness.data.listing_table`)."""
    if isinstance(records, Listing):
        label_sets = label_sets or records.label_sets
    records = list(records)
    segmented = any(r.segment is not None for r in records)
    rated = any(r.fps is not None for r in records)
    with open(listing, "w", encoding="utf-8", newline="") as handle:
        if not (segmented or rated or label_sets):
            for record in records:
                handle.write(f"{record.path} {format_label(record.label)}\n")
            return
        frames = segmented and any(r.segment_unit == "frames" for r in records if r.segment is not None)
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["path", *(label_sets or ["label"]), *(("start_frame", "end_frame") if frames else
                         ("start", "end") if segmented else ()), *(("fps",) if rated else ())])  # fmt: skip
        for r in records:
            labels = [str(i) for i in label_ids(r.label)] if label_sets else [format_label(r.label)]
            segment = [] if not segmented else ["", ""] if r.segment is None else [
                f"{int(v)}" if frames else repr(float(v)) for v in r.segment]  # fmt: skip
            writer.writerow([r.path, *labels, *segment, *([repr(float(r.fps)) if r.fps else ""] if rated else [])])
