"""One training job per run folder: an exclusive lock that names its holder.

Rank 0 takes ``<folder>/.lock`` before anything is written; the other ranks write only under
rank 0's lock. The lock is ``flock`` on that file: the kernel drops it when the holder exits, even
by ``kill -9``, so a lock file left by a dead job is simply taken again. Where the filesystem has no
``flock`` (NFSv3 mounted ``nolock``, Lustre without ``-o flock``) the lock falls back to creating
``.lock.excl`` with ``O_EXCL``; a holder that is gone is then recognised only on the same host (its
PID no longer runs), and a holder on another host is named so that the user can remove the file.
Within one process the lock is re-entrant (a notebook or a test may build several trainers on one
folder one after another).
"""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path

from harness.core.errors import UserError
from harness.core.locking import give_back, holder_text, identity, take_flock

log = logging.getLogger(__name__)
LOCK_FILE = ".lock"
EXCLUSIVE_FILE = ".lock.excl"
_held: dict[str, tuple[int | None, int]] = {}  # folder -> (open lock descriptor or None, users)


class RunFolderInUse(UserError):
    """Another job holds the run folder."""


def acquire(folder: str | Path, use_flock: bool = True) -> None:
    """Take the run folder for this process (created if needed).

    Raises:
        RunFolderInUse: another live job holds it; the message names its PID and host.
    """
    folder = Path(folder)
    key = str(folder.resolve())
    if key in _held:
        descriptor, users = _held[key]
        _held[key] = (descriptor, users + 1)
        return
    folder.mkdir(parents=True, exist_ok=True)
    if use_flock:
        descriptor = _flock(folder)
        if descriptor is not None:
            _held[key] = (descriptor, 1)
            return
        log.warning("%s: the filesystem has no flock; using an O_EXCL lock file instead", folder)
    _exclusive(folder)
    _held[key] = (None, 1)


def _flock(folder: Path) -> int | None:
    """The descriptor holding the flock, or None where the filesystem does not support flock."""

    def in_use(holder: str) -> RunFolderInUse:
        return RunFolderInUse(
            f"{folder} is in use by another run ({holder}): wait for it to finish, stop it, or give this run "
            "another folder"
        )

    def taken_over(holder: str) -> None:
        log.info("%s: taking over the lock left by %s (no longer running)", folder, holder)

    return take_flock(folder / LOCK_FILE, in_use, taken_over)


def _exclusive(folder: Path) -> None:
    path = folder / EXCLUSIVE_FILE
    for _ in range(2):
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o664)
        except FileExistsError:
            if not _stale(path):
                raise RunFolderInUse(
                    f"{folder} is in use by another run ({holder_text(path)}): wait for it, stop it, or give this "
                    f"run another folder; if that job is gone, delete {path}"
                ) from None
            log.info("%s: removing the lock left by %s (no longer running)", folder, holder_text(path))
            path.unlink(missing_ok=True)
            continue
        os.write(descriptor, identity())
        os.fsync(descriptor)
        os.close(descriptor)
        return
    raise RunFolderInUse(f"{folder}: could not take {path} (another run took it at the same moment)")


def _stale(path: Path) -> bool:
    """A lock file whose holder ran on this host and no longer runs."""
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False  # being written right now, or unreadable: never guess
    if holder.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, KeyError, ValueError, TypeError):
        return False
    return False


def release(folder: str | Path) -> None:
    """Give the run folder back (after the last :func:`acquire` of this process)."""
    key = str(Path(folder).resolve())
    if key not in _held:
        return
    descriptor, users = _held.pop(key)
    if users > 1:
        _held[key] = (descriptor, users - 1)
        return
    if descriptor is None:
        (Path(folder) / EXCLUSIVE_FILE).unlink(missing_ok=True)
    else:
        give_back(descriptor)


def take_run_folder(folder: Path, strategy) -> None:
    """Rank 0 takes the run folder; every rank learns whether it could (so all stop together)."""
    problem = None
    if strategy.is_main:
        try:
            acquire(folder)
        except RunFolderInUse as error:
            problem = str(error)
    problems = [p for p in strategy.gather_objects(problem) if p]
    if problems:
        raise RunFolderInUse(problems[0])
