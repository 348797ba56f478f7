"""Reading WebDataset tar shards: sources (manifests, brace patterns, ``pipe:``), samples, decoding.

A shard is a tar file of samples ``key.mp4`` + ``key.cls`` (+ ``key.json``): the members of a
sample share the key (the name up to the first dot). A sample may hold a still image instead of a
video (``key.jpg``, ``.png``, ``.webp``...: a 1-frame video). :mod:`harness.data.shards` streams them.
"""

from __future__ import annotations

import hashlib
import io
import logging
import subprocess
import tarfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import torch

from harness.core.errors import UserError
from harness.core.fileio import read_json
from harness.data.decode import IMAGE_EXTENSIONS, DecodeError
from harness.data.files import ClipItem, load_clips
from harness.data.open_files import (
    TOO_MANY_OPEN_FILES,
    OpenFileBudget,
    ParkableFile,
    open_file_limit_problem,
    too_many_open_files,
)
from harness.data.sampling import ClipSpec

log = logging.getLogger("harness.data.shards")
VIDEO_EXTENSIONS = ("mp4", "webm", "mkv", "avi", "mov")


class ShardError(UserError, ValueError):
    """A shard source that cannot be used as configured; the message says why and what to do."""


@dataclass(frozen=True)
class Shard:
    """One tar shard: where it is and (when a manifest says) how many samples it holds."""

    url: str
    samples: int | None = None
    sha256: str | None = None  #: the manifest's checksum: streams verify it before reading (shard_integrity)


class ShardChecksumError(tarfile.ReadError):
    """A shard whose bytes differ from the checksum its manifest records."""


class _HashingReader(io.RawIOBase):
    """Passes a byte stream through while hashing it (the checksum costs no second read)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream, self.digest = stream, hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.stream.read(len(buffer))
        self.digest.update(data)
        buffer[: len(data)] = data
        return len(data)

    def finish(self) -> str:
        """Hash the rest of the stream (the tar's end padding) and return the hex digest."""
        while chunk := self.stream.read(1 << 20):
            self.digest.update(chunk)
        return self.digest.hexdigest()


def expand_braces(pattern: str) -> list[str]:
    """WebDataset's shard syntax: ``::`` joins sources, each brace-expanded by ``braceexpand`` (the
    library webdataset uses): ranges ``a-{000..002}.tar`` (zero padding kept), lists ``{a,b}``,
    nested braces."""
    from braceexpand import braceexpand

    return [url for part in pattern.split("::") for url in braceexpand(part)]


def list_shards(source: str, check_exists: bool = True) -> list[Shard]:
    """The shards of one source: a manifest, a (brace) pattern, or ``pipe:`` command(s).

    ``check_exists``: fail now when a shard of a pattern is missing. Only one rank of a job does
    (one ``stat`` per shard on every rank is a metadata storm); on the others a missing shard is a
    broken shard when it is read (counted and quarantined).
    """
    if source.endswith(".json"):
        path = Path(source)
        manifest = read_manifest(path)
        if not manifest.get("complete", True):
            raise ShardError(f"{path} is incomplete (harness.prepare was interrupted): rerun it to finish")
        return [Shard(str(path.parent / e["name"]), e["samples"], e.get("sha256")) for e in manifest["shards"]]
    urls = expand_braces(source)
    missing = [url for url in urls if check_exists and not url.startswith("pipe:") and not Path(url).is_file()]
    if missing:
        raise ShardError(f"{len(missing)} shard(s) of {source!r} not found, e.g. {missing[0]}")
    return [Shard(url) for url in urls]


def read_manifest(path: str | Path) -> dict:
    """A shard manifest (``harness.prepare``'s ``manifest.json``), checked to be one."""
    manifest = read_json(path, ShardError, "shard manifest")
    shards = manifest.get("shards") if isinstance(manifest, dict) else None
    if not isinstance(shards, list) or not all(isinstance(s, dict) and "name" in s and "samples" in s for s in shards):
        raise ShardError(f"{path}: not a shard manifest (needs a 'shards' list of {{name, samples}} entries)")
    return manifest


def manifest_classes(source: str) -> int | None:
    """Number of classes in a source's manifest label map (None for sources without manifest)."""
    if not source.endswith(".json"):
        return None
    return len(read_manifest(source).get("label_map", {})) or None


def manifest_largest_label(source: str) -> int | None:
    """The largest class id a source's manifest says its samples hold (from its class histogram,
    ordered as its label map), or None when unknown."""
    if not source.endswith(".json"):
        return None
    counts = list((read_manifest(source).get("class_histogram") or {}).values())
    used = [index for index, count in enumerate(counts) if count]
    return max(used) if used else None


def open_stream(url: str, budget: OpenFileBudget | None = None) -> tuple[IO[bytes], subprocess.Popen | None]:
    """A readable byte stream of a shard (a local file, or a ``pipe:`` command's stdout); a local
    file under ``budget`` is a :class:`ParkableFile` (a pipe cannot be parked)."""
    if url.startswith("pipe:"):
        process = subprocess.Popen(url[len("pipe:") :], shell=True, stdout=subprocess.PIPE)
        return process.stdout, process
    return (ParkableFile(url, budget) if budget is not None else open(url, "rb")), None


def read_samples(url: str, skip: int = 0, sha256: str | None = None,
                 budget: OpenFileBudget | None = None) -> Iterator[tuple[str, dict[str, bytes]]]:  # fmt: skip
    """Samples ``(key, {extension: bytes})`` of a shard in tar order, after the first ``skip``.

    Raises ``tarfile.TarError`` / ``OSError`` / ``EOFError`` for an unreadable or truncated tar
    (after yielding the samples before the damage), and :class:`ShardChecksumError` at the end of a
    shard whose bytes do not hash to ``sha256`` (hashed while reading). A local file is read under
    ``budget`` when given (:mod:`harness.data.open_files`). Running out of descriptors is no broken
    shard: it raises :class:`ShardError` saying what to do.
    """
    try:
        yield from _tar_samples(url, skip, sha256, budget)
    except OSError as error:
        if error.errno in TOO_MANY_OPEN_FILES:
            raise ShardError(too_many_open_files(url, error)) from None
        raise


def _tar_samples(url: str, skip: int, sha256: str | None, budget: OpenFileBudget | None) -> Iterator[tuple[str, dict]]:
    raw, process = open_stream(url, budget)
    hashing = _HashingReader(raw) if sha256 else None
    stream = io.BufferedReader(hashing, 1 << 16) if hashing else raw
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as tar:
            key, parts, index = None, {}, 0
            for member in tar:
                if not member.isfile():
                    continue
                name = member.name
                base = name.rsplit("/", 1)[-1]
                sample_key = name[: len(name) - len(base)] + base.split(".", 1)[0]
                extension = base.split(".", 1)[1] if "." in base else ""
                if sample_key != key:
                    if key is not None:
                        if index >= skip:
                            yield key, parts
                        index += 1
                    key, parts = sample_key, {}
                if index < skip:
                    continue  # a sample read before the resume point: skip its data unread
                data = tar.extractfile(member).read()
                if len(data) != member.size:
                    raise tarfile.ReadError(f"truncated member {name}: {len(data)} of {member.size} bytes")
                parts[extension] = data
            if key is not None and index >= skip:
                yield key, parts
        if hashing is not None:
            stream.read()  # what the tar reader left in the buffer and the stream
            if (actual := hashing.finish()) != sha256:
                raise ShardChecksumError(f"sha256 {actual[:12]}... differs from the manifest's {sha256[:12]}...")
    finally:
        stream.close()
        raw.close()  # the hashing layer leaves it open (and a parked file leaves the budget)
        if process is not None:
            process.kill()
            process.wait()


def check_open_file_limit(sources: Sequence[Sequence[Shard]], interleave: int, max_open_files: int,
                          workers: int) -> None:  # fmt: skip
    """Start-up check (main process): raise the soft open-file limit for what the loader's processes
    may hold (per stream: at most ``max_open_files`` local shard files, plus one pipe per ``pipe:``
    reader, which cannot be parked), or raise :class:`ShardError` saying what to do."""
    files = pipes = 0
    for shards in sources:
        piped = sum(shard.url.startswith("pipe:") for shard in shards)
        files, pipes = files + min(interleave, len(shards) - piped), pipes + min(interleave, piped)
    problem = open_file_limit_problem(min(files, max_open_files) + pipes, workers)
    if problem:
        raise ShardError(problem)


VISITED, FAILED, BROKEN_SHARDS = 0, 1, 2  # counters kept per stream (worker) in shared memory


class ShardCounters:
    """What shard training and shard validation count and report alike: per worker (stream),
    samples visited, bad samples and broken shards, in shared memory (workers write, the main
    process reads), and the quarantine file each bad sample or shard is appended to."""

    def __init__(self, quarantine_path: str | Path | None = None, manifests: Sequence[str] = ()) -> None:
        self.counters = torch.zeros(64, 3, dtype=torch.int64).share_memory_()
        self.quarantine = Path(quarantine_path) if quarantine_path else None
        self.num_classes: int | None = None  #: labels outside [0, num_classes) are quarantined
        self.multi_label = False  #: samples with several labels are allowed (else quarantined)
        self.decode_max_short_side: int | str = 0  #: see harness.data.transforms.DecodeScale
        self.manifests = [m for m in manifests if m.endswith(".json")]  #: the sources that have one
        self._every_source_has_one = len(self.manifests) == len(manifests)

    def class_count(self) -> int | None:
        """Classes in the manifests' label maps (None without manifests)."""
        return max((manifest_classes(m) or 0 for m in self.manifests), default=0) or None

    def class_counts(self, num_classes: int) -> np.ndarray | None:
        """Samples of each class from the manifests' class histograms (None unless every source
        has a manifest)."""
        if not self.manifests or not self._every_source_has_one:
            return None
        counts = np.zeros(num_classes, dtype=np.int64)
        for manifest in self.manifests:
            histogram = list((read_manifest(manifest).get("class_histogram") or {}).values())[:num_classes]
            counts[: len(histogram)] += np.asarray(histogram, dtype=np.int64)
        return counts

    def label_problem(self, num_classes: int) -> str | None:
        """A manifest whose class histogram holds samples of a class at or above ``num_classes``."""
        for manifest in self.manifests:
            if read_manifest(manifest).get("multi_label") and not self.multi_label:
                return f"{manifest}: the shards are multi-label; train them with meta.multi_label=true"
            largest = manifest_largest_label(manifest)
            if largest is not None and largest >= num_classes:
                return (f"{manifest}: its class histogram has samples of class {largest}, but the run has "
                        f"{num_classes} classes (ids 0..{num_classes - 1})")  # fmt: skip
        return None

    def stats(self) -> dict[str, int]:
        """Samples visited, bad samples skipped and broken shards, over this rank's workers
        (``attempts`` / ``failed_attempts``: the same counts under the names every source uses
        for the run's failure verdict, :mod:`harness.training.data_budget`)."""
        visited, failed, broken = self.counters.sum(0).tolist()
        return {"visited": visited, "failed": failed, "broken_shards": broken, "attempts": visited,
                "failed_attempts": failed}  # fmt: skip

    def attempt_counts(self) -> tuple[int, int]:
        """``(samples read, unusable ones)`` so far over this rank's workers."""
        visited, failed = self.counters[:, :2].sum(0).tolist()
        return visited, failed

    def visited(self, slot: int) -> None:
        """A sample read by worker ``slot``."""
        self.counters[slot, VISITED] += 1

    def bad_sample(self, slot: int, what: str, reason: str) -> None:
        """A sample that cannot be used: counted and quarantined."""
        self.counters[slot, FAILED] += 1
        quarantine(self.quarantine, what, reason)

    def broken_shard(self, slot: int, url: str, reason: str, unusable: int = 0) -> None:
        """A shard that broke off (unreadable, truncated, altered): counted and quarantined;
        ``unusable``: its samples that cannot be used (counted as tried and unusable)."""
        self.counters[slot, BROKEN_SHARDS] += 1
        self.counters[slot, VISITED] += unusable
        self.counters[slot, FAILED] += unusable
        quarantine(self.quarantine, url, reason)


def quarantine(path: Path | None, what: str, reason: str) -> None:
    log.warning("skipping %s: %s", what, reason)
    if path is not None:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(f"{what}\t{reason}\n")


def decode_sample(url: str, key: str, parts: dict[str, bytes], spec: ClipSpec, num_clips: int, transform: Callable,
                  random: bool, rng: np.random.Generator, decoder: str,
                  num_classes: int | None = None, multi_label: bool = False,
                  decode_max_short_side: int | str = 0) -> ClipItem:  # fmt: skip
    """A :class:`ClipItem` from the members of one tar sample, its video or else its image (raises
    DecodeError when unusable, including a label outside ``[0, num_classes)``). ``.cls`` holds a
    class id, or several joined by commas (``3,17,42``) for a multi-label sample, which
    ``multi_label`` must allow."""
    video = next((parts[e] for e in VIDEO_EXTENSIONS if e in parts), None)
    image = next((parts[e] for e in IMAGE_EXTENSIONS if e in parts), None) if video is None else None
    if video is None and image is None:
        raise DecodeError(f"no video or image member ({'/'.join(VIDEO_EXTENSIONS + IMAGE_EXTENSIONS)})")
    if "cls" not in parts:
        raise DecodeError("no .cls member")
    try:
        ids = tuple(int(part) for part in parts["cls"].decode().strip().split(","))
    except ValueError as error:
        raise DecodeError(f"bad .cls content {parts['cls'][:20]!r}") from error
    if len(ids) > 1 and not multi_label:
        raise DecodeError(f"{len(ids)} labels in .cls; a multi-label sample needs meta.multi_label=true")
    if min(ids) < 0:
        raise DecodeError(f"negative label {min(ids)}")
    if num_classes is not None and max(ids) >= num_classes:
        raise DecodeError(f"label {max(ids)} is outside the {num_classes} classes (ids 0..{num_classes - 1})")
    label = ids if multi_label else ids[0]
    clips, indices = load_clips(video if image is None else image, spec, num_clips, transform, random=random,
                                allow_clip_overlap=False, rng=rng, decoder=decoder,
                                decode_max_short_side=decode_max_short_side, image=image is not None)  # fmt: skip
    return ClipItem(clips, label, indices, f"{url}#{key}")
