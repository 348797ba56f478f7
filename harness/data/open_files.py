"""Bounded open files: shard files read under a per-stream budget, and the open-file limit check.

A stream (one DataLoader worker) reads ``interleave`` shards of every source at once; with many
sources that is more files than a process may hold (``ulimit -n``, often 1024). Each local shard is
read through a :class:`ParkableFile`, and an :class:`OpenFileBudget` keeps at most ``limit`` of a
stream's files open: when one more needs a descriptor, the least recently read file is *parked*
(closed) and reopened at the byte it had reached on its next read. Everything above the file (the
tar parser, the SHA-256 state, buffered bytes) stays in memory, so what a stream reads, in which
order, is unchanged; a reopen costs one ``open`` + ``lseek``.

``RLIMIT_NOFILE`` is a per-process limit, and forked DataLoader workers inherit it together with a
copy of every descriptor the main process holds. At start-up :func:`open_file_limit_problem` works
out what the busiest process of a loader may hold (the main process, which holds the batches its
workers hand over, or one worker) and raises the soft limit when the hard limit allows.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import resource
from collections import OrderedDict

log = logging.getLogger("harness.data.shards")

#: descriptors a batch in flight may hold under torch's ``file_descriptor`` sharing strategy (one
#: per tensor, another while it is handed over; a shard batch has 3 tensors)
DESCRIPTORS_PER_BATCH = 8
#: descriptors the main process holds per worker for the DataLoader's queues and the worker itself
DESCRIPTORS_PER_WORKER = 4
#: spare for what a process opens after start-up (NCCL sockets, logs, checkpoints, validation)
SPARE_DESCRIPTORS = 128
#: a raised soft limit stops here unless more is needed (child processes such as ``pipe:``
#: commands inherit it, and a few tools still walk every possible descriptor)
RAISED_LIMIT_CAP = 65536


class OpenFileBudget:
    """At most ``limit`` :class:`ParkableFile` of one stream open at once; the least recently read
    one is parked to make room."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"an open-file budget needs at least 1 file, not {limit}")
        self.limit = limit
        self.open: OrderedDict[int, ParkableFile] = OrderedDict()  #: open files, least recently read first
        self.parked = 0  #: files parked so far
        self.reopened = 0  #: parked files reopened so far (what the budget costs)

    def make_room(self) -> None:
        """Park least recently read files until one more may open."""
        while len(self.open) >= self.limit:
            self.open.popitem(last=False)[1].park()
            self.parked += 1

    def touch(self, file: ParkableFile) -> None:
        """``file`` (open) is being read: it becomes the last to be parked."""
        self.open[id(file)] = file
        self.open.move_to_end(id(file))

    def release(self, file: ParkableFile) -> None:
        """``file`` closed or parked: it no longer counts."""
        self.open.pop(id(file), None)


class ParkableFile(io.RawIOBase):
    """A local file read from start to end, which its :class:`OpenFileBudget` may close between
    reads; the next read reopens it at :attr:`offset`. Opens at once (a missing file raises here,
    as ``open`` would)."""

    def __init__(self, path: str, budget: OpenFileBudget) -> None:
        super().__init__()
        self.path, self.budget = path, budget
        self.offset = 0  #: bytes read so far
        self._file: io.FileIO | None = None
        self._handle()

    @property
    def name(self) -> str:
        """The file's path."""
        return self.path

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = self._handle().readinto(buffer) or 0
        self.offset += count
        return count

    def read(self, size: int | None = -1) -> bytes:
        handle = self._handle()
        data = handle.readall() if size is None or size < 0 else handle.read(size)
        self.offset += len(data)
        return data

    def park(self) -> None:
        """Close the descriptor, keeping the offset (the next read reopens the file)."""
        self.budget.release(self)
        if self._file is not None:
            self._file.close()
            self._file = None

    def close(self) -> None:
        if not self.closed:
            self.park()
        super().close()

    def _handle(self) -> io.FileIO:
        if self._file is None:
            self.budget.make_room()
            handle = io.FileIO(self.path, "rb")
            if self.offset:
                handle.seek(self.offset)
                self.budget.reopened += 1
            self._file = handle
        self.budget.touch(self)
        return self._file


def open_descriptors() -> int:
    """Descriptors this process holds now (0 where the system does not list them)."""
    for folder in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(folder)) - 1  # less the one listing the folder
        except OSError:
            continue
    return 0


STREAM_ADVICE = "lower shards.max_open_files or shards.interleave (pipe: readers cannot be parked)"


def descriptors_needed(per_stream: int, workers: int, prefetch_factor: int = 2) -> tuple[int, str, str]:
    """The most descriptors one process of a loader may hold, how that adds up, and what lowers it:
    the main process (it holds the batches its workers hand over; with no workers it reads the
    stream itself) or a worker (forked: it starts with a copy of the main process's descriptors)."""
    held, in_flight = open_descriptors(), prefetch_factor * DESCRIPTORS_PER_BATCH
    if workers == 0:
        return held + per_stream + SPARE_DESCRIPTORS, f"{held} open now + {per_stream} shard readers", STREAM_ADVICE
    per_worker = DESCRIPTORS_PER_WORKER + in_flight
    main, worker = held + workers * per_worker, held + per_stream + in_flight
    if worker >= main:
        detail = f"a worker: {held} inherited + {per_stream} shard readers + {in_flight} for batches in flight"
        return worker + SPARE_DESCRIPTORS, detail, STREAM_ADVICE
    detail = f"the main process: {held} open now + {workers} workers x {per_worker} for queues and batches"
    return main + SPARE_DESCRIPTORS, detail, "lower data.num_workers"


def open_file_limit_problem(per_stream: int, workers: int) -> str | None:
    """Start-up check of ``RLIMIT_NOFILE`` for a loader of ``workers`` whose streams hold
    ``per_stream`` descriptors each: raise the soft limit when the hard limit allows (one info
    line); return what is wrong and what to do when it does not (None: enough)."""
    needed, detail, advice = descriptors_needed(per_stream, workers)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or needed <= soft:
        return None
    if hard != resource.RLIM_INFINITY and needed > hard:
        return (f"the data loader may hold {needed} open files in one process ({detail} + "
                f"{SPARE_DESCRIPTORS} spare), more than the open-file limit (soft {soft}, hard {hard}): "
                f"raise the hard limit (ulimit -Hn, limits.conf, the container's nofile) or {advice}")  # fmt: skip
    target = needed if hard == resource.RLIM_INFINITY else min(hard, max(needed, RAISED_LIMIT_CAP))
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    log.info("raised the open-file limit from %d to %d (hard %s): the data loader may hold %d files in one process",
             soft, target, "unlimited" if hard == resource.RLIM_INFINITY else hard, needed)  # fmt: skip
    return None


TOO_MANY_OPEN_FILES = (errno.EMFILE, errno.ENFILE)


def too_many_open_files(url: str, error: OSError) -> str:
    """What to say when opening a shard fails with EMFILE / ENFILE (a limit, not a broken shard)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    scope = "the system" if error.errno == errno.ENFILE else f"this process (limit {soft})"
    return (f"too many open files in {scope} while opening shard {url} ({error.strerror}): raise the limit "
            f"(ulimit -n) or {STREAM_ADVICE}")  # fmt: skip
