"""File locks that name their holder, shared by run folders and ``harness.prepare`` outputs.

A lock is ``flock`` on a small file holding the holder's PID, host and start time: the kernel
drops it when the holder exits, even by ``kill -9``, so a file left by a dead holder is simply
taken again. This module imports nothing heavy (``harness.prepare`` must start in well under a
second), and nothing of the harness but its errors.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}  #: errnos of a filesystem without flock


def holder_text(path: Path) -> str:
    """Who holds (or held) the lock file ``path``: PID, host and since when."""
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder["started"]))
        return f"PID {holder['pid']} on {holder['host']}, since {started}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that left no details"


def identity() -> bytes:
    """This process as a lock file records it."""
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}).encode()


def take_flock(path: Path, in_use: Callable[[str], Exception], taken_over: Callable[[str], None]) -> int | None:
    """Lock ``path`` (created if needed) without waiting and write this process into it; returns
    the descriptor holding the lock, or None where the filesystem has no flock.

    Raises:
        ``in_use(holder_text)``: another live process holds it.
    """
    import fcntl

    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o664)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise in_use(holder_text(path)) from None
    except OSError as error:
        os.close(descriptor)
        if error.errno in NO_FLOCK:
            return None
        raise
    if os.fstat(descriptor).st_size:
        taken_over(holder_text(path))  # left by a holder that is gone
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, identity(), 0)
    os.fsync(descriptor)
    return descriptor


def give_back(descriptor: int) -> None:
    """Empty (no holder to name), unlock and close a lock taken by :func:`take_flock`; the unlock
    is explicit because forked workers share the open file, and with it the lock."""
    import fcntl

    os.ftruncate(descriptor, 0)
    fcntl.flock(descriptor, fcntl.LOCK_UN)
    os.close(descriptor)
