"""Shard checksums verified before any sample of a shard is used, verdicts cached per file state.

A shard whose manifest records a SHA-256 is hashed whole when a stream (a DataLoader worker)
opens it, before its first sample is read; a shard that fails is never read (the stream counts its
samples as tried and unusable and quarantines it). The verdict is kept per shard with the file's
size and modification time, in shared memory, so every worker of the rank sees it: while the file
stays unchanged, a later open (another pass of the epoch, a later epoch, every evaluation) costs
one ``stat``; a file rewritten since is hashed again.

Why a separate hash pass and not buffering the shard: a stream holds ``interleave`` shards of
every source open at once, and shards are about 1 GB, so holding whole shards in a worker's memory
(or spooling them to local disk) does not fit. The hash pass reads the file sequentially at disk
speed (no decoding) and leaves it in the page cache, from which the sample reads that follow
mostly come; the cost is one SHA-256 of the file (about 0.5 s per GB per worker with SHA-NI, what
the former streaming check already paid) and, when the page cache cannot hold the stream's open
shards, a second read of the file. The verdicts are per rank: on many ranks the seeded shuffle
deals a shard to another rank in the next epoch, so there every epoch verifies its shards once.
"""

from __future__ import annotations

import hashlib
import os

import torch

from harness.data.open_files import TOO_MANY_OPEN_FILES, too_many_open_files
from harness.data.shard_io import Shard, ShardError

UNCHECKED, GOOD, BAD = 0, 1, 2  # verdicts, kept per shard with the file's size and mtime (ns)
CHUNK = 1 << 20


def file_sha256(path: str) -> str:
    """SHA-256 hex digest of a local file, read in 1 MiB chunks (running out of descriptors is a
    :class:`ShardError` saying what to do, not a broken shard)."""
    digest, buffer = hashlib.sha256(), bytearray(CHUNK)
    view = memoryview(buffer)
    try:
        with open(path, "rb", buffering=0) as handle:
            while count := handle.readinto(buffer):
                digest.update(view[:count])
    except OSError as error:
        if error.errno in TOO_MANY_OPEN_FILES:
            raise ShardError(too_many_open_files(path, error)) from None
        raise
    return digest.hexdigest()


class ShardVerdicts:
    """The checksum verdicts of ``count`` shards (numbered by the caller), shared by the workers of
    one rank: ``[verdict, size, mtime_ns]`` per shard in shared memory."""

    def __init__(self, count: int) -> None:
        self.table = torch.zeros(max(count, 1), 3, dtype=torch.int64).share_memory_()
        self.hashed = torch.zeros(1, dtype=torch.int64).share_memory_()  #: hash passes so far, all workers

    def problem(self, index: int, shard: Shard) -> str | None:
        """Why shard ``index`` must not be used, or None: its bytes hash to the manifest's SHA-256
        (or it records none, or it is a ``pipe:`` command, which cannot be read twice)."""
        if shard.sha256 is None or shard.url.startswith("pipe:"):
            return None
        try:
            state = os.stat(shard.url)
            verdict, size, mtime = self.table[index].tolist()
            if verdict != UNCHECKED and (size, mtime) == (state.st_size, state.st_mtime_ns):
                return None if verdict == GOOD else f"sha256 differs from the manifest's {shard.sha256[:12]}... " \
                                                    "(found earlier; the file is unchanged since)"  # fmt: skip
            actual = file_sha256(shard.url)
        except ShardError:
            raise
        except OSError as error:
            return f"unreadable shard ({error})"
        self.hashed += 1
        self._record(index, GOOD if actual == shard.sha256 else BAD, state)
        if actual != shard.sha256:
            return f"sha256 {actual[:12]}... differs from the manifest's {shard.sha256[:12]}..."
        return None

    def _record(self, index: int, verdict: int, state: os.stat_result) -> None:
        """Store a verdict for the file state it was computed from (the stat before hashing: a
        file changed while it was hashed gets a new mtime, so it is hashed again next time)."""
        row = self.table[index]
        row[0] = UNCHECKED  # a reader in between sees no verdict rather than a stale one
        row[1], row[2] = state.st_size, state.st_mtime_ns
        row[0] = verdict
