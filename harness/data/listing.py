"""Labelled video listings: CSV/space-separated text files and NPY arrays of paths.

A listing names one video per line with its integer class label. The V-JEPA 2 format is
``path/to/video.mp4 <label>`` (space separated, no header); comma-separated lines and a
header row are accepted too because spreadsheet tools and pandas write those. Relative paths
are resolved against the folder of the listing file, so a dataset folder can be moved whole.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class ListingError(ValueError):
    """A listing file that cannot be parsed; the message names the file and line."""


@dataclass(frozen=True)
class VideoRecord:
    """One labelled video.

    Attributes:
        path: absolute path (or URL understood by the decoder) of the video file.
        label: integer class id, ``>= 0``.
    """

    path: str
    label: int


def _resolve(path: str, base: Path) -> str:
    if "://" in path or os.path.isabs(path):
        return path
    return str((base / path).resolve())


def _parse_label(text: str, where: str) -> int:
    try:
        label = int(text)
    except ValueError:
        raise ListingError(f"{where}: label {text!r} is not an integer") from None
    if label < 0:
        raise ListingError(f"{where}: label {label} is negative")
    return label


def _split_line(line: str) -> list[str]:
    """Split ``path label`` on a comma (CSV) or on the last run of whitespace.

    Splitting on the *last* whitespace keeps paths that contain spaces intact.
    """
    if "," in line:
        return [field.strip() for field in next(csv.reader(io.StringIO(line)))]
    return line.rsplit(None, 1)


def read_text_listing(listing: str | Path) -> list[VideoRecord]:
    """Parse a CSV / space-separated listing into records.

    The first line is treated as a header when its label field is not an integer
    (e.g. ``path,label``). Blank lines and lines starting with ``#`` are ignored.

    Raises:
        ListingError: a malformed line, naming ``file:line``.
    """
    listing = Path(listing)
    base = listing.parent
    records: list[VideoRecord] = []
    first_content_line = True
    with open(listing, encoding="utf-8") as handle:
        for line_number, raw in enumerate(handle, start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            where = f"{listing}:{line_number}"
            fields = _split_line(line)
            if len(fields) != 2 or not fields[0]:
                raise ListingError(f"{where}: expected 'path label', got {line!r}")
            if first_content_line:
                first_content_line = False
                if not fields[1].lstrip("-").isdigit():
                    continue  # header row such as "path,label"
            records.append(VideoRecord(_resolve(fields[0], base), _parse_label(fields[1], where)))
    return records


def read_npy_listing(listing: str | Path) -> list[VideoRecord]:
    """Read an NPY listing: a 1-D array of paths (label 0) or an ``[N, 2]`` array of path, label."""
    listing = Path(listing)
    array = np.load(listing, allow_pickle=False)
    base = listing.parent
    if array.ndim == 1:
        return [VideoRecord(_resolve(str(p), base), 0) for p in array]
    if array.ndim == 2 and array.shape[1] == 2:
        return [
            VideoRecord(_resolve(str(p), base), _parse_label(str(lab), f"{listing}:row {i}"))
            for i, (p, lab) in enumerate(array)
        ]
    raise ListingError(f"{listing}: expected a 1-D array of paths or [N, 2] of (path, label), got shape {array.shape}")


def read_listing(listing: str | Path) -> list[VideoRecord]:
    """Read any supported listing (``.npy`` or text) into a list of :class:`VideoRecord`.

    Raises:
        ListingError: the file is missing, empty, or has a malformed line.
    """
    listing = Path(listing)
    if not listing.is_file():
        raise ListingError(f"{listing}: listing file not found")
    records = read_npy_listing(listing) if listing.suffix == ".npy" else read_text_listing(listing)
    if not records:
        raise ListingError(f"{listing}: listing has no videos")
    return records


def write_listing(records: list[VideoRecord], listing: str | Path) -> None:
    """Write records in the V-JEPA 2 format (``path label`` per line, space separated)."""
    with open(listing, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(f"{record.path} {record.label}\n")
