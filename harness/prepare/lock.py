"""One prepare per part of an output folder at a time: a lock that names its holder.

Each run takes ``flock`` on ``<output>/.lock<tag>`` (``.lock`` for the whole input,
``.lock-0001of0004`` for a part: the parts of one input run side by side) before it reads or
writes anything there, and writes its PID, host and start time into it. The kernel drops the lock
when its holder exits, even by ``kill -9``, so a lock file left by a dead prepare is simply taken
again. The same scheme as a run folder's lock (:mod:`harness.core.locking`). Where the filesystem has no
``flock`` (NFSv3 ``nolock``, Lustre without ``-o flock``) the run goes on unlocked, with a warning.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from harness.core.errors import UserError
from harness.core.locking import give_back, take_flock
from harness.prepare.parts import Part

log = logging.getLogger("harness.prepare")


class OutputInUse(UserError):
    """Another prepare of the same part is writing into the output folder."""


def acquire(output: Path, part: Part) -> int | None:
    """Take ``output`` for ``part`` (the folder is created); returns the descriptor holding the
    lock (None where the filesystem has no flock).

    Raises:
        OutputInUse: another live prepare of ``part`` holds it; the message names its PID and host.
    """
    output.mkdir(parents=True, exist_ok=True)
    what = f"{output}" if part.whole else f"part {part} of {output}"

    def in_use(holder: str) -> OutputInUse:
        return OutputInUse(f"{what} is being prepared by another harness.prepare ({holder}): wait for it to finish "
                           "or stop it, or use another --output")  # fmt: skip

    def taken_over(holder: str) -> None:
        log.info("%s: taking over the lock left by %s (no longer running)", output, holder)

    descriptor = take_flock(output / part.lock_name, in_use, taken_over)
    if descriptor is None:
        log.warning("%s: the filesystem has no flock: nothing stops a second prepare into it", output)
    return descriptor


def release(descriptor: int | None) -> None:
    """Give the lock back: emptied (no holder to name), unlocked (for the forked workers that
    share the open file too), closed."""
    if descriptor is not None:
        give_back(descriptor)


@contextlib.contextmanager
def output_lock(output: Path, part: Part) -> Iterator[None]:
    """Hold ``output`` for ``part`` while the block runs (see the module docs)."""
    descriptor = acquire(output, part)
    try:
        yield
    finally:
        release(descriptor)
