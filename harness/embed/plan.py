"""Which units go to which job, from the inputs alone, in a few bytes per video: the units of a
job (its shard) are made when the job runs, so ten million windows cost no more than the list of
their videos.

Jobs ``0 .. video_jobs - 1`` are runs of ``rows_per_shard`` consecutive units of the videos (whole
videos, or their windows, in input order; a video that cannot be opened is one unit with its
error); then one job per input shard (its samples, read as they come).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from harness.data.shard_io import Shard
from harness.data.units import Probed, Unit, probe_lengths, window_starts, windows

Entry = tuple[Unit, "str | None"]  #: a unit and, when it is known unreadable already, its error


@dataclass
class Plan:
    """The jobs of a run (see the module docs)."""

    videos: list[str]
    shards: list[Shard]
    rows_per_shard: int
    window_s: float | None = None
    stride_s: float | None = None
    lengths: np.ndarray | None = None  #: ``[videos, 2]`` frames and fps (windows only; -1: unreadable)
    errors: dict[int, str] | None = None  #: why a video could not be opened, by its position
    starts: np.ndarray | None = None  #: ``[videos + 1]`` index of each video's first unit

    @property
    def units(self) -> int:
        """Units of the videos (windows, or whole videos) and failed videos; not the shards' samples."""
        return int(self.starts[-1]) if self.starts is not None else len(self.videos)

    @property
    def video_jobs(self) -> int:
        """Jobs of the videos: ``rows_per_shard`` units each, the last one shorter."""
        return -(-self.units // self.rows_per_shard)

    @property
    def jobs(self) -> int:
        """Every job: the videos' and one per input shard."""
        return self.video_jobs + len(self.shards)

    def shard(self, job: int) -> Shard | None:
        """The input shard of ``job`` (None for a job of videos)."""
        return self.shards[job - self.video_jobs] if job >= self.video_jobs else None

    def entries(self, job: int) -> list[Entry]:
        """The units of video job ``job``, in input order, each with its known error or None."""
        low, high = job * self.rows_per_shard, min((job + 1) * self.rows_per_shard, self.units)
        if self.starts is None:
            return [(Unit((index,), self.videos[index]), None) for index in range(low, high)]
        out: list[Entry] = []
        index = int(np.searchsorted(self.starts, low, side="right")) - 1
        while index < len(self.videos) and self.starts[index] < high:
            first = int(self.starts[index])
            out += self.video_entries(index)[max(low - first, 0) : high - first]
            index += 1
        return out

    def video_entries(self, index: int) -> list[Entry]:
        """The units of video ``index``: its windows, or itself (with its error when unreadable)."""
        video = self.videos[index]
        if self.errors and index in self.errors:
            return [(Unit((index,), video), self.errors[index])]
        if self.lengths is None:
            return [(Unit((index,), video), None)]
        frames, fps = self.lengths[index]
        return [(unit, None) for unit in windows(index, video, int(frames), float(fps), self.window_s, self.stride_s)]

    def fingerprint(self) -> str:
        """SHA-256 of what the jobs read (videos, their lengths, shards): other inputs differ."""
        digest = hashlib.sha256()
        for index, video in enumerate(self.videos):
            length = tuple(self.lengths[index]) if self.lengths is not None else ()
            digest.update(f"{video}\0{length}\n".encode())
        for shard in self.shards:
            digest.update(f"{shard.url}\0{shard.sha256}\n".encode())
        return digest.hexdigest()


def plan_jobs(videos: list[str], shards: list[Shard], rows_per_shard: int, window_s: float | None = None,
              stride_s: float | None = None, progress: bool = True, probed: Probed | None = None) -> Plan:  # fmt: skip
    """The plan of ``videos`` (whole, or windows of ``window_s`` seconds every ``stride_s``,
    default the window) and ``shards``. Windows need each video's length: ``probed`` (every rank's
    share of :func:`probe_lengths`, merged, so that all ranks plan from the same lengths and each
    video is opened once in all), or, when None, every video opened here."""
    plan = Plan(videos, shards, rows_per_shard)
    if not window_s:
        return plan
    stride_s = stride_s or window_s
    lengths, errors = probed if probed is not None else probe_lengths(videos, range(len(videos)), progress)
    counts = np.ones(len(videos), dtype=np.int64)
    for index in range(len(videos)):
        if index not in errors:
            counts[index] = len(window_starts(int(lengths[index, 0]), lengths[index, 1], window_s, stride_s)[0])
    starts = np.concatenate([[0], np.cumsum(counts)])
    return Plan(videos, shards, rows_per_shard, window_s, stride_s, lengths, errors, starts)
