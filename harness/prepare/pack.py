"""Packing staged clips into WebDataset tar shards, in parallel, with a journal.

Each finished shard appends one line to the split's journal (flushed, not fsynced: the shard
itself was written durably, and a lost line only means that shard is written again), so the
bookkeeping costs the same for every shard; the manifest is written once, at the end. A rerun
reads the journal, keeps the shards it lists whose clips and checksum match (verified in
parallel) and writes the others.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import numpy as np

from harness.core.fileio import write_atomic
from harness.core.progress import progress
from harness.data.listing import format_label, names_of_label
from harness.data.media import is_image
from harness.prepare.cut import Workers, remove_staged
from harness.prepare.parts import Part

META_FIELDS = ("source", "start", "end", "fps", "frames", "size", "label")


class _HashingWriter:
    """Passes writes through to a file while hashing them (the checksum costs no second read)."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle, self.digest, self.size = handle, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.handle.write(data)

    def tell(self) -> int:
        return self.handle.tell()


def _tar_member(name: str, data: bytes) -> tuple[tarfile.TarInfo, io.BytesIO]:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644  # fixed metadata: identical reruns
    return info, io.BytesIO(data)


def write_shard(path: Path, clips: list[dict], label_names: list[str]) -> str:
    """Write one shard durably: per clip ``key.mp4`` (an image: ``key.jpg``, ``key.png``...) +
    ``key.cls`` + ``key.json``; returns its sha256."""
    hashing: list[_HashingWriter] = []

    def write(handle: IO[bytes]) -> None:
        hashing.append(_HashingWriter(handle))
        with tarfile.open(fileobj=hashing[0], mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for clip in clips:
                meta = {key: clip[key] for key in META_FIELDS}
                meta["label_name"] = names_of_label(clip["label"], label_names)
                media = Path(clip["file"]).suffix.lower().lstrip(".")  # an image keeps its own suffix
                for suffix, data in (
                    (media if is_image(clip["file"]) else "mp4", Path(clip["file"]).read_bytes()),
                    ("cls", format_label(clip["label"]).encode()),  # "3" or "3,17,42"
                    ("json", json.dumps(meta, sort_keys=True).encode()),
                ):
                    tar.addfile(*_tar_member(f"{clip['key']}.{suffix}", data))

    write_atomic(path, write)
    return hashing[0].digest.hexdigest()


def sha256_of(path: Path) -> str:
    """The sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def clip_bytes(clip: dict) -> int:
    """A staged clip's size (recorded when cut; staging folders of older versions: asked of the file)."""
    return clip["bytes"] if "bytes" in clip else Path(clip["file"]).stat().st_size


def plan_shards(clips: list[dict], shard_bytes: float, seed: int, max_samples: int | None = None) -> list[list[dict]]:
    """Clips in a seeded random order (shards mix videos and classes), cut into shards of about
    ``shard_bytes`` (and at most ``max_samples`` clips)."""
    order = np.random.default_rng(seed).permutation(len(clips))
    shards: list[list[dict]] = [[]]
    size = 0
    for index in order:
        clip = clips[int(index)]
        full = max_samples is not None and len(shards[-1]) >= max_samples
        if shards[-1] and (size + clip_bytes(clip) > shard_bytes or full):
            shards.append([])
            size = 0
        shards[-1].append(clip)
        size += clip_bytes(clip)
    return [shard for shard in shards if shard]


def keys_digest(clips: list[dict]) -> str:
    """What a shard holds, as its entry records it (``keys``): the sha1 of its clip keys."""
    return hashlib.sha1("\n".join(c["key"] for c in clips).encode()).hexdigest()


class Journal:
    """``<split>/journal<tag>.jsonl``: a header naming the run, then one shard entry per line."""

    def __init__(self, path: Path, run: str) -> None:
        self.path, self.run = path, run
        self.handle: IO[str] | None = None

    def read(self) -> dict[str, dict]:
        """The entries of an earlier attempt of the same run, by shard name (a torn last line and
        the journal of another run are ignored)."""
        if not self.path.is_file():
            return {}
        lines = self.path.read_text(encoding="utf-8", errors="replace").splitlines()
        entries = []
        for line in lines:
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # the line a crash cut short
        if not entries or entries[0].get("run") != self.run:
            return {}
        return {entry["name"]: entry for entry in entries[1:] if isinstance(entry, dict) and "name" in entry}

    def start(self, kept: list[dict]) -> None:
        """Begin the journal afresh (atomically) with the header and the shards kept from an
        earlier attempt."""
        text = "".join(json.dumps(entry) + "\n" for entry in [{"journal": 1, "run": self.run}, *kept])
        write_atomic(self.path, lambda handle: handle.write(text.encode()))
        self.handle = open(self.path, "a", encoding="utf-8")

    def append(self, entry: dict) -> None:
        """Record one finished shard (one line, flushed)."""
        self.handle.write(json.dumps(entry) + "\n")
        self.handle.flush()

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None


def _verify_job(args: tuple[Path, str]) -> tuple[Path, bool]:
    path, sha256 = args
    return path, path.is_file() and sha256_of(path) == sha256


def verify(folder: Path, entries: list[dict], workers: Workers, what: str) -> set[str]:
    """The names of the shards among ``entries`` whose file is there with the recorded checksum."""
    jobs = [(folder / entry["name"], entry["sha256"]) for entry in entries]
    done = progress(workers.map(_verify_job, jobs), total=len(jobs), desc=f"{what} verified", unit="shard")
    return {path.name for path, good in done if good}


def kept_shards(folder: Path, part: Part, plans: list[list[dict]], previous: dict[str, dict], verified: set[str],
                workers: Workers, what: str) -> dict[int, dict]:  # fmt: skip
    """The planned shards an earlier attempt finished: same clips, file there, checksum right
    (``verified``: names whose checksum was checked already)."""
    candidates = {}
    for number, clips in enumerate(plans):
        entry = previous.get(part.shard_name(number))
        if entry and entry.get("keys") == keys_digest(clips) and entry.get("samples") == len(clips):
            candidates[number] = entry
    unchecked = [entry for entry in candidates.values() if entry["name"] not in verified]
    good = verified | (verify(folder, unchecked, workers, what) if unchecked else set())
    return {number: entry for number, entry in candidates.items() if entry["name"] in good}


def _shard_job(args: tuple[int, Path, list[dict], list[str]]) -> tuple[int, dict]:
    number, path, clips, label_names = args
    sha256 = write_shard(path, clips, label_names)
    return number, {"name": path.name, "samples": len(clips), "sha256": sha256, "keys": keys_digest(clips)}


def write_shards(folder: Path, part: Part, plans: dict[int, list[dict]], label_names: list[str], journal: Journal,
                 workers: Workers, what: str) -> Iterator[tuple[int, dict]]:  # fmt: skip
    """Write the planned shards in parallel; as each finishes: its journal line, then its staged
    clips are deleted (in that order, so that a crash never loses a clip of an unrecorded shard)."""
    jobs = [(number, folder / part.shard_name(number), clips, label_names) for number, clips in plans.items()]
    for number, entry in progress(workers.map(_shard_job, jobs), total=len(jobs), desc=f"{what} shards",
                                  unit="shard"):  # fmt: skip
        journal.append(entry)
        remove_staged(plans[number])
        yield number, entry


def pack(clips: list[dict], folder: Path, part: Part, label_names: list[str], shard: tuple[float, int, int | None],
         run: str, previous: dict[str, dict], workers: Workers, restage: Callable[[list[dict]], None],
         what: str, verified: set[str] = frozenset()) -> list[dict]:  # fmt: skip
    """Write the shards of one split (part) and return their entries in shard order.

    ``shard`` is ``(bytes per shard, seed, most clips per shard)``; ``previous``: entries of an
    earlier attempt (its manifest; ``verified``: those whose checksum was checked); its journal's
    entries are added. ``restage`` cuts again the sources of clips whose staged file is gone (a
    shard of an earlier attempt that was lost since).
    """
    folder.mkdir(parents=True, exist_ok=True)
    journal = Journal(folder / part.journal_name, run)
    previous = {**previous, **journal.read()}
    plans = plan_shards(sorted(clips, key=lambda c: c["key"]), *shard)
    kept = kept_shards(folder, part, plans, previous, set(verified), workers, what) if previous else {}
    todo = {number: plan for number, plan in enumerate(plans) if number not in kept}
    # Only clips cut by an earlier attempt can be gone (a fresh run asks nothing of the file system).
    missing = [c for plan in todo.values() for c in plan if c.get("resumed") and not Path(c["file"]).is_file()]
    if missing:
        restage(missing)
    journal.start([kept[number] for number in sorted(kept)])
    try:
        entries = dict(kept)
        entries.update(write_shards(folder, part, todo, label_names, journal, workers, what))
    finally:
        journal.close()
    for plan in (plans[number] for number in kept):
        remove_staged(plan)
    return [entries[number] for number in range(len(plans))]
