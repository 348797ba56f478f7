"""The input videos: collected from class folders or a listing, split into train and validation
by source video, and sliced into parts; all computed from the whole input, identically in every
part."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.core.errors import UserError
from harness.data.listing import label_ids, name_labels, read_listing
from harness.data.media import is_image
from harness.data.segments import segment_name, split_segment_name
from harness.prepare.parts import Part

VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".avi", ".mov")
Label = int | tuple[int, ...]
Entry = tuple[str, Label, "float | None"]  #: an input's path, label and frame rate (a frame folder's, from its line)


@dataclass(frozen=True)
class Source:
    """One input video (or, with ``--chunked``, one ready clip); ``index`` numbers it in the
    whole input (train first, then ``--val-input``) and names its clips."""

    index: int
    path: str
    label: Label  #: several class ids for a multi-label video
    fps: float | None = None  #: the frame rate its listing line gives (a frame folder's ``fps`` column)


def collect(input_path: Path) -> tuple[list[Entry], list[str]]:
    """``(path, label, fps)`` entries and label names from a folder of class folders (their videos, and
    their sub-folders as folders of numbered frames) or a listing."""
    if input_path.is_dir():
        classes = sorted(p.name for p in input_path.iterdir() if p.is_dir())
        if not classes:
            raise UserError(f"{input_path} has no class folders (expected <root>/<class>/*.mp4)")
        pairs = [
            (str(video), label, None)
            for label, name in enumerate(classes)
            for video in _class_members(input_path / name)
        ]
        return pairs, classes
    return _listing_pairs(input_path)


def _class_members(folder: Path) -> list[Path]:
    """The videos, images and frame folders of one class folder, sorted (the entries' types come with the
    listing: no stat per file)."""
    with os.scandir(folder) as entries:
        found = [Path(entry.path) for entry in entries
                 if entry.is_dir() or os.path.splitext(entry.name)[1].lower() in VIDEO_SUFFIXES
                 or is_image(entry.name)]  # fmt: skip
    return sorted(found)


def _listing_pairs(path: Path) -> tuple[list[Entry], list[str]]:
    """The one place that reads a listing: its ``(path, label, fps)`` entries, and its class names (a
    listing of names: sorted, ids in that order) or its class ids as names."""
    listing = read_listing(path)
    if listing.label_sets is not None:  # a run of label sets reads listings only (meta.label_sets)
        raise UserError(f"{path}: its header names label sets ({', '.join(listing.label_sets)}), which shards do "
                        "not carry yet: train from the listing with meta.label_sets")  # fmt: skip
    if listing.named:
        names = sorted(listing.names)
        listing = name_labels(listing, names, str(path))
    else:
        names = [str(i) for i in range(1 + int(listing.all_ids().max()))]
    # a line with a segment is that segment of its video (path#t=start,end): cut alone
    return [(segment_name(listing.path(i), listing.segment(i), listing.segment_unit), listing.label(i),
             listing.frame_rate(i)) for i in range(len(listing))], names  # fmt: skip


def split_sources(pairs: list[Entry], val_fraction: float, seed: int) -> dict[str, list[Source]]:
    """Train/validation split by source video, stratified per class, reproducible from ``seed``:
    every segment of one video (``path#t=...``) goes where the video goes, so no video is seen in
    both (a video is stratified by its first line's first label)."""
    rng = np.random.default_rng(seed)
    splits: dict[str, list[Source]] = {"train": [], "val": []}
    videos: dict[str, int] = {}  # video path -> its number, in order of first appearance
    video_of: list[int] = []  # each line's video number
    by_label: dict[int, list[int]] = {}
    for path, label, _ in pairs:
        video = split_segment_name(path)[0]
        if video not in videos:
            videos[video] = len(videos)
            by_label.setdefault(label_ids(label)[0], []).append(videos[video])  # multi-label: its first label
        video_of.append(videos[video])
    val = set()
    for numbers in by_label.values():
        count = int(round(val_fraction * len(numbers)))
        val.update(rng.permutation(numbers)[:count].tolist())
    for index, (path, label, fps) in enumerate(pairs):
        splits["val" if video_of[index] in val else "train"].append(Source(index, path, label, fps))
    return splits


def build_splits(input_path: Path, val_input: Path | None, val_fraction: float,
                 seed: int) -> tuple[dict[str, list[Source]], list[str]]:  # fmt: skip
    """The sources of each split and the label names, from the whole input."""
    pairs, label_names = collect(input_path)
    if val_input is None:
        return split_sources(pairs, val_fraction, seed), label_names
    val_pairs, _ = collect(val_input)
    return {
        "train": [Source(i, *entry) for i, entry in enumerate(pairs)],
        "val": [Source(len(pairs) + i, *entry) for i, entry in enumerate(val_pairs)],
    }, label_names


def sources_of_part(sources: list[Source], part: Part, seed: int) -> list[Source]:
    """The sources part ``part`` prepares: every N-th of a seeded shuffle, so that each part gets
    a like share of every class and of long and short videos."""
    if part.whole:
        return sources
    order = np.random.default_rng((seed, 1)).permutation(len(sources))
    return [sources[i] for i in sorted(order[part.index :: part.count].tolist())]


def input_digest(splits: dict[str, list[Source]], label_names: list[str]) -> str:
    """A fingerprint of the whole input as split (every part computes the same one)."""
    digest = hashlib.sha1("\n".join(label_names).encode())
    for split, sources in splits.items():
        for source in sources:
            digest.update(f"\n{split}\t{source.index}\t{source.path}\t{label_ids(source.label)}".encode())
            if source.fps is not None:  # (only then: inputs without a rate keep their digest)
                digest.update(f"\t{source.fps!r}".encode())
    return digest.hexdigest()
