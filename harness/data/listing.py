"""Labelled video listings: CSV/space-separated text files and NPY arrays of paths.

A listing names one video per line with its integer class label. The V-JEPA 2 format is
``path/to/video.mp4 <label>`` (space separated, no header); comma-separated lines and a
header row are accepted too because spreadsheet tools and pandas write those. A multi-label
listing (``meta.multi_label``, Charades-style) gives several labels joined by commas:
``path/to/video.mp4 3,17,42`` (or a quoted CSV field, ``path,"3,17,42"``). Relative paths
are resolved against the folder of the listing file, so a dataset folder can be moved whole.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from harness.errors import UserError


class ListingError(UserError, ValueError):
    """A listing file that cannot be parsed; the message names the file and line."""


@dataclass(frozen=True)
class VideoRecord:
    """One labelled video.

    Attributes:
        path: absolute path (or URL understood by the decoder) of the video file.
        label: integer class id, ``>= 0`` (-1 until a class name is given its id); a tuple of
            ids for a line with several labels (multi-label data).
        where: ``listing:line`` it came from (for messages; not part of equality).
        name: the class name when the listing names classes instead of numbering them (a
            tuple of names for several labels).
    """

    path: str
    label: int | tuple[int, ...]
    where: str = field(default="", compare=False)
    name: str | tuple[str, ...] | None = None


def label_ids(label: int | tuple[int, ...] | list[int]) -> tuple[int, ...]:
    """The class ids of a label (one, or several for multi-label data; a list is what JSON and
    the gathered evaluation rows hold)."""
    return tuple(label) if isinstance(label, (tuple, list)) else (label,)


def names_of_label(label: int | tuple[int, ...] | list[int], names: list[str]) -> str:
    """The class names of a label, joined by ``;`` (``walk;run``)."""
    return ";".join(names[i] for i in label_ids(label))


def format_label(label: int | tuple[int, ...]) -> str:
    """A label as a listing or shard writes it: ``3``, or ``3,17,42``."""
    return ",".join(str(i) for i in label_ids(label))


# Words a header row's fields are made of ("path,label", "video class", "filename label_id").
HEADER_WORDS = {"path", "video", "file", "filename", "name", "label", "labels", "class", "category", "target", "id"}


def _resolve(path: str, base: Path) -> str:
    if "://" in path or os.path.isabs(path):
        return path
    return str((base / path).resolve())


def _parse_label(text: str, where: str) -> int:
    try:
        label = int(text)
    except ValueError:
        raise ListingError(f"{where}: label {text!r} is neither a class id nor a class name") from None
    if label < 0:
        raise ListingError(f"{where}: label {label} is negative")
    return label


def _is_label(text: str) -> bool:
    """A class id (``3``) or a class name (``abseiling``, ``"air drumming"``): not a number, not
    a path, at least one letter; or several of them joined by commas (``3,17,42``)."""
    if "," in text:
        parts = [part.strip() for part in text.split(",")]
        return all(parts) and all(_is_label(part) for part in parts)
    if text.isdigit():
        return True
    return any(c.isalpha() for c in text) and not any(c in text for c in "./\\") and not _is_number(text)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _split_line(line: str) -> list[str] | None:
    """Split ``path label``: CSV (quotes allowed) or the last run of whitespace, whichever gives a
    second field that is a label; None when neither does. Splitting on the *last* whitespace keeps
    paths with spaces intact, and trying whitespace after CSV keeps paths with commas intact."""
    candidates = []
    whitespace = line.rsplit(None, 1)
    if len(whitespace) == 2 and "," in whitespace[1] and _is_label(whitespace[1]):
        candidates.append(whitespace)  # path 3,17,42: several labels
    if "," in line:
        candidates.append([field.strip() for field in next(csv.reader(io.StringIO(line)))])
    candidates.append(whitespace)
    for fields in candidates:
        if len(fields) == 2 and fields[0] and (_is_label(fields[1]) or fields[1].lstrip("-").isdigit()):
            return fields
    return None


def _looks_like_header(line: str) -> bool:
    """A header is made of header words only (``path,label``), never of a path and a label."""
    words = [w for w in line.replace(",", " ").replace("_", " ").lower().split() if w]
    return bool(words) and all(w in HEADER_WORDS for w in words)


def read_text_listing(listing: str | Path) -> list[VideoRecord]:
    """Parse a CSV / space-separated listing into records.

    The first line is a header only when it is made of header words (``path,label``, ``video
    class``). Labels are class ids, or class names throughout (:attr:`VideoRecord.name`; the
    ids are given later, see :func:`name_labels`). A UTF-8 byte-order mark is dropped. Blank lines
    and lines starting with ``#`` are ignored.

    Raises:
        ListingError: a malformed line (naming ``file:line``) or a file that is not UTF-8 text.
    """
    listing = Path(listing)
    base = listing.parent
    try:
        text = listing.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = listing.read_bytes()[: error.start].count(b"\n") + 1
        raise ListingError(f"{listing}:{line}: not UTF-8 text (byte {error.start}); save it as UTF-8") from None
    records: list[VideoRecord] = []
    first_content_line = True
    for line_number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{listing}:{line_number}"
        if first_content_line:
            first_content_line = False
            if _looks_like_header(line):
                continue
        fields = _split_line(line)
        if fields is None:
            parts = line.replace(",", " ").split()
            if len(parts) >= 2:
                _parse_label(parts[-1], where)  # names a label that is not a class id
            raise ListingError(f"{where}: expected 'path label' (space or comma separated), got {line!r}")
        parts = [part.strip() for part in fields[1].split(",")]
        named = not all(part.lstrip("-").isdigit() for part in parts)
        if records and named != (records[0].name is not None):
            first = records[0].name or records[0].label
            raise ListingError(f"{where}: label {fields[1]!r}: the listing mixes class ids and class names "
                               f"({records[0].where} has {first!r})")  # fmt: skip
        several = len(parts) > 1
        if named:
            name = tuple(parts) if several else parts[0]
            records.append(VideoRecord(_resolve(fields[0], base), (-1,) * len(parts) if several else -1, where, name))
        else:
            ids = tuple(_parse_label(part, where) for part in parts)
            records.append(VideoRecord(_resolve(fields[0], base), ids if several else ids[0], where))
    return records


def name_labels(records: list[VideoRecord], names: list[str], source: str) -> list[VideoRecord]:
    """Records whose labels are class names, with the id of each name in ``names`` (records
    with ids are returned as they are).

    Raises:
        ListingError: a name that is not among ``names`` (naming ``file:line``).
    """
    ids = {name: index for index, name in enumerate(names)}
    out = []
    for record in records:
        if record.name is not None:
            several = isinstance(record.name, tuple)
            for name in record.name if several else (record.name,):
                if name not in ids:
                    raise ListingError(f"{record.where}: class {name!r} is not one of the {len(names)} classes of "
                                       f"{source}")  # fmt: skip
            label = tuple(ids[name] for name in record.name) if several else ids[record.name]
            record = replace(record, label=label)
        out.append(record)
    return out


def read_npy_listing(listing: str | Path) -> list[VideoRecord]:
    """Read an NPY listing: a 1-D array of paths (label 0) or an ``[N, 2]`` array of path, label."""
    listing = Path(listing)
    try:
        array = np.load(listing, allow_pickle=False)
    except (ValueError, OSError) as error:
        raise ListingError(f"{listing}: not a readable NPY array of paths ({error})") from None
    base = listing.parent
    if array.ndim == 1:
        return [VideoRecord(_resolve(str(p), base), 0) for p in array]
    if array.ndim == 2 and array.shape[1] == 2:
        return [
            VideoRecord(_resolve(str(p), base), _parse_label(str(lab), f"{listing}:row {i}"), f"{listing}:row {i}")
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
            handle.write(f"{record.path} {format_label(record.label)}\n")
