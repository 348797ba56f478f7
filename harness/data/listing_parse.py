"""Parsing listing text into a :class:`~harness.data.listing_columns.Listing`.

Two parsers with one meaning. :func:`parse_line` reads one line as the listing format says (CSV
with quotes, the last run of whitespace, class ids or names, several labels joined by commas).
:func:`parse_text` gets the same answer for the lines of a big listing that have the plain shape
``path<one space or tab>label`` or ``path,label`` (no quotes, no stray whitespace) with numpy, a
pass over the bytes at a time, and hands every other line to :func:`parse_line`. Whenever a line
is wrong, the whole file is read again line by line, so the error named is the first one in file
order, exactly as the line parser alone reports it.
"""

from __future__ import annotations

import csv
import io
import os

import numpy as np

from harness.core.errors import UserError
from harness.data.listing_columns import Listing, csr, pack


class ListingError(UserError, ValueError):
    """A listing file that cannot be parsed; the message names the file and line."""


# Words a header row's fields are made of ("path,label", "video class", "filename label_id").
HEADER_WORDS = {"path", "video", "file", "filename", "name", "label", "labels", "class", "category", "target", "id"}
# Characters str.splitlines() also breaks lines at: a file holding any is read line by line. Each
# is looked for only when its first byte is there (a one-byte search is a memchr).
ODD_BREAKS = [b"\x0b", b"\x0c", b"\x1c", b"\x1d", b"\x1e", b"\xc2\x85", b"\xe2\x80\xa8", b"\xe2\x80\xa9"]
MAX_ID_DIGITS = 9  # int32 labels; longer digit runs go through the line parser (and int())
SPACE, TAB, COMMA, QUOTE, HASH, NEWLINE, RETURN = 32, 9, 44, 34, 35, 10, 13


# ------------------------------------------------------------------------------ one line
def parse_label(text: str, where: str) -> int:
    """A class id (``>= 0``) from its text, or a :class:`ListingError` naming ``where``."""
    try:
        label = int(text)
    except ValueError:
        raise ListingError(f"{where}: label {text!r} is neither a class id nor a class name") from None
    if label < 0:
        raise ListingError(f"{where}: label {label} is negative")
    if label >= 2**31:
        raise ListingError(f"{where}: label {label} is too large for a class id")
    return label


def is_label(text: str) -> bool:
    """A class id (``3``) or a class name (``abseiling``, ``"air drumming"``): not a number, not
    a path, at least one letter; or several of them joined by commas (``3,17,42``)."""
    if "," in text:
        parts = [part.strip() for part in text.split(",")]
        return all(parts) and all(is_label(part) for part in parts)
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
    if len(whitespace) == 2 and "," in whitespace[1] and is_label(whitespace[1]):
        candidates.append(whitespace)  # path 3,17,42: several labels
    if "," in line:
        candidates.append([field.strip() for field in next(csv.reader(io.StringIO(line)))])
    candidates.append(whitespace)
    for fields in candidates:
        if len(fields) == 2 and fields[0] and (is_label(fields[1]) or fields[1].lstrip("-").isdigit()):
            return fields
    return None


def looks_like_header(line: str) -> bool:
    """A header is made of header words only (``path,label``), never of a path and a label."""
    words = [w for w in line.replace(",", " ").replace("_", " ").lower().split() if w]
    return bool(words) and all(w in HEADER_WORDS for w in words)


def parse_line(line: str, where: str) -> tuple[str, tuple[int, ...] | None, tuple[str, ...] | None]:
    """One stripped content line: ``(path as written, ids, None)`` or ``(path, None, names)``."""
    fields = _split_line(line)
    if fields is None:
        parts = line.replace(",", " ").split()
        if len(parts) >= 2:
            parse_label(parts[-1], where)  # names a label that is not a class id
        raise ListingError(f"{where}: expected 'path label' (space or comma separated), got {line!r}")
    return (fields[0], *label_field(fields[1], where))


def label_field(text: str, where: str) -> tuple[tuple[int, ...] | None, tuple[str, ...] | None]:
    """A label field (``3``, ``walk``, ``3,17,42``) as ``(ids, None)`` or ``(None, names)``."""
    parts = [part.strip() for part in text.split(",")]
    if not all(part.lstrip("-").isdigit() for part in parts):
        return None, tuple(parts)
    return tuple(parse_label(part, where) for part in parts), None


Parsed = tuple[int, str, "tuple[int, ...] | None", "tuple[str, ...] | None"]  # line number, path, ids, names


def parse_lines(text: str, source: str, numbers: list[int] | None = None) -> list[Parsed]:
    """The line parser over ``text`` (every line, or the lines ``numbers``): blank lines and ``#``
    comments skipped, a first line of header words skipped, ids and names never mixed."""
    lines = text.splitlines()
    records: list[Parsed] = []
    first_content_line = numbers is None  # a chosen subset: the caller has dealt with the header
    for number in numbers if numbers is not None else range(1, len(lines) + 1):
        line = lines[number - 1].strip()
        if not line or line.startswith("#"):
            continue
        if first_content_line:
            first_content_line = False
            if looks_like_header(line):
                continue
        where = f"{source}:{number}"
        path, ids, names = parse_line(line, where)
        if records and (names is None) != (records[0][3] is None):
            first_number, _, first_ids, first_names = records[0]
            first = (first_names[0] if len(first_names) == 1 else first_names) if first_names else (
                first_ids[0] if len(first_ids) == 1 else first_ids)  # fmt: skip
            label = ",".join(names) if names else ",".join(map(str, ids))
            raise ListingError(f"{where}: label {label!r}: the listing mixes class ids and class names "
                               f"({source}:{first_number} has {first!r})")  # fmt: skip
        records.append((number, path, ids, names))
    return records


# --------------------------------------------------------------------------- whole file
def _positions(data: np.ndarray, value: int) -> np.ndarray:
    return np.flatnonzero(data == value)


def _count_in(positions: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """How many of the sorted ``positions`` fall in each ``[start, end)``."""
    return np.searchsorted(positions, ends) - np.searchsorted(positions, starts)


def _last_before(positions: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """The last of ``positions`` before each end (-1 where none)."""
    index = np.searchsorted(positions, ends) - 1
    return np.where(index >= 0, positions[np.maximum(index, 0)] if len(positions) else -1, -1)


def _space(chars: np.ndarray) -> np.ndarray:
    return (chars == SPACE) | (chars == TAB) | (chars == RETURN)


def _digits(data: np.ndarray, first: np.ndarray, length: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Value of the digit runs ``data[first : first + length]`` and whether each is all digits."""
    value = np.zeros(len(first), dtype=np.int64)
    all_digits = (length >= 1) & (length <= MAX_ID_DIGITS)
    for k in range(MAX_ID_DIGITS):
        inside = k < length
        digit = data[np.minimum(first + k, len(data) - 1)].astype(np.int16) - 48
        all_digits &= ~inside | ((digit >= 0) & (digit <= 9))
        value = np.where(inside, value * 10 + np.clip(digit, 0, 9), value)
    return value, all_digits


def parse_text(raw: bytes, source: str) -> Listing:
    """The records of a text listing's bytes (UTF-8, already checked) as a :class:`Listing`."""
    base = os.path.abspath(os.path.dirname(source) or ".")
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    odd = any(mark[:1] in raw and mark in raw for mark in ODD_BREAKS)
    if odd or (b"\r" in raw and raw.count(b"\r") != raw.count(b"\r\n")):
        return from_parsed(parse_lines(raw.decode("utf-8"), source), source, base)
    data = np.frombuffer(raw, dtype=np.uint8)
    newlines = _positions(data, NEWLINE)
    starts = np.concatenate(([0], newlines + 1))
    ends = np.concatenate((newlines, [len(data)]))
    if b"\r" in raw:
        ends = ends - ((ends > starts) & (data[np.maximum(ends - 1, 0)] == RETURN))
    filled = ends > starts
    first_char = np.where(filled, data[np.minimum(starts, len(data) - 1)], NEWLINE)
    last_char = np.where(filled, data[np.maximum(ends - 1, 0)], NEWLINE)
    blank_or_comment = ~filled | (first_char == HASH)
    whitespace = np.flatnonzero((data == SPACE) | (data == TAB)) if b"\t" in raw else _positions(data, SPACE)
    commas = _positions(data, COMMA)
    spaces_in, commas_in = _count_in(whitespace, starts, ends), _count_in(commas, starts, ends)
    separator = np.where(commas_in == 0, _last_before(whitespace, ends), _last_before(commas, ends))
    plain = ~blank_or_comment & ~_space(first_char) & ~_space(last_char)
    plain &= ((commas_in == 0) & (spaces_in > 0)) | ((commas_in == 1) & (spaces_in == 0))
    if b'"' in raw:
        plain &= _count_in(_positions(data, QUOTE), starts, ends) == 0
    plain &= (separator > starts) & (ends > separator + 1)
    before = data[np.maximum(separator - 1, 0)]
    plain &= ~_space(before) & (before != COMMA)
    ids, all_digits = _digits(data, separator + 1, ends - separator - 1)
    fast = np.flatnonzero(plain)
    slow = np.flatnonzero(~plain & ~blank_or_comment)
    return _assemble(raw, data, source, base, starts, ends, separator, ids, all_digits, fast, slow)


def _assemble(raw, data, source, base, starts, ends, separator, ids, all_digits, fast, slow) -> Listing:
    """Columns from the lines the vectorised pass read (``fast``) and the ones it left (``slow``)."""
    header = _header_line(raw, starts, ends, np.sort(np.concatenate((fast[:64], slow[:64])))[:64])
    if header is not None:
        fast, slow = fast[fast != header], slow[slow != header]
    named_fast = fast[~all_digits[fast]]
    names: dict[str, int] = {}
    name_index = np.zeros(0, dtype=np.int64)
    if len(named_fast):
        tokens = [raw[s:e].decode("utf-8") for s, e in zip((separator[named_fast] + 1).tolist(),
                                                            ends[named_fast].tolist())]  # fmt: skip
        long_ids = np.array([token.isdigit() for token in tokens], dtype=bool)
        if long_ids.any():  # ids of more digits than int32 holds: the line parser (and int()) decide
            fast = fast[~np.isin(fast, named_fast[long_ids], assume_unique=True)]
            slow = np.sort(np.concatenate((slow, named_fast[long_ids])))
            named_fast, tokens = named_fast[~long_ids], [t for t, long in zip(tokens, long_ids) if not long]
        usable = {token: is_label(token) for token in set(tokens)}
        if not all(usable.values()):  # e.g. "a.mp4 1.5": the line parser names the problem
            return from_parsed(parse_lines(raw.decode("utf-8"), source), source, base)
        name_index = np.fromiter((names.setdefault(t, len(names)) for t in tokens), np.int64, len(tokens))
    try:
        others = parse_lines(raw.decode("utf-8"), source, (slow + 1).tolist()) if len(slow) else []
    except ListingError:
        others = None
    kinds = {"names" if r[3] is not None else "ids" for r in others or []}
    kinds |= {"names"} if len(named_fast) else set()
    kinds |= {"ids"} if len(named_fast) < len(fast) else set()
    if others is None or len(kinds) > 1:  # a wrong line, or ids mixed with names: read it all, fail there
        return from_parsed(parse_lines(raw.decode("utf-8"), source), source, base)
    labels = ids.astype(np.int32)
    labels[named_fast] = name_index
    return _merge(data, source, base, starts, separator, labels, fast, others, names, "names" in kinds)


def _header_line(raw: bytes, starts: np.ndarray, ends: np.ndarray, content: np.ndarray) -> int | None:
    """The first content line's index when it is a header row."""
    for line in content[:64].tolist():
        text = raw[starts[line] : ends[line]].decode("utf-8").strip()
        if text and not text.startswith("#"):
            return line if looks_like_header(text) else None
    return None


def _merge(data, source, base, starts, separator, labels, fast, others, names, named) -> Listing:
    """Listing columns in line order from the vectorised lines and the line parser's records."""
    slow_lines = np.array([r[0] - 1 for r in others], dtype=np.int64)
    slow_per_line = [r[2] if r[2] is not None else tuple(names.setdefault(n, len(names)) for n in r[3])
                     for r in others]  # fmt: skip
    at = np.searchsorted(fast, slow_lines)  # where each parsed line goes among the vectorised ones
    # The file's bytes hold the vectorised lines' paths; the parsed ones (unquoted...) go after them.
    extra, extra_starts, extra_lengths = pack([r[1].encode("utf-8") for r in others])
    text = np.concatenate((data, extra)) if len(extra) else data
    path_starts = np.insert(starts[fast], at, extra_starts + len(data))
    path_lengths = np.insert((separator[fast] - starts[fast]).astype(np.int32), at, extra_lengths)
    order_lines = np.insert(fast, at, slow_lines)
    first_labels = np.insert(labels[fast], at, [p[0] for p in slow_per_line]).astype(np.int32)
    listing = Listing(source, base, text, path_starts, path_lengths, first_labels, (order_lines + 1).astype(np.int32),
                      list(names) if named else None)  # fmt: skip
    if any(len(p) != 1 for p in slow_per_line):
        counts = np.insert(np.ones(len(fast), np.int64), at, [len(p) for p in slow_per_line])
        listing.multi_offsets = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(counts, out=listing.multi_offsets[1:])
        flat = np.empty(int(listing.multi_offsets[-1]), dtype=np.int32)
        flat[listing.multi_offsets[:-1][counts == 1]] = first_labels[counts == 1]
        for position, per_line in zip((at + np.arange(len(at))).tolist(), slow_per_line):
            flat[listing.multi_offsets[position] : listing.multi_offsets[position] + len(per_line)] = per_line
        listing.multi_labels = flat
    return listing


def from_parsed(records: list[Parsed], source: str, base: str) -> Listing:
    """A :class:`Listing` of the line parser's records."""
    names: dict[str, int] = {}
    named = bool(records) and records[0][3] is not None
    per_line = [r[2] if r[3] is None else tuple(names.setdefault(n, len(names)) for n in r[3]) for r in records]
    text, starts, lengths = pack([r[1].encode("utf-8") for r in records])
    listing = Listing(source, base, text, starts, lengths, np.array([p[0] for p in per_line], dtype=np.int32),
                      np.array([r[0] for r in records], dtype=np.int32), list(names) if named else None)  # fmt: skip
    if any(len(p) != 1 for p in per_line):
        listing.multi_offsets, listing.multi_labels = csr(per_line)
    return listing
