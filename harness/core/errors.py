"""One way for a user's mistake to end: a clear line, exit status 2, no traceback.

Every error the user can fix (a config key, a listing line, a checkpoint, a manifest, a run
folder in use) is a :class:`UserError`. Entry points wrap their ``main`` in :func:`entry_point`,
which prints such an error as ``error: <what, where, what to do>`` on stderr and returns 2; the
traceback appears only with ``logging.level=debug`` (or ``HARNESS_DEBUG=1``). Anything else is
a bug of ours and keeps its traceback. This module imports nothing of the harness, so every
layer (``data/``, ``models/``, ``parallel/``) can raise these errors.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import traceback
from collections.abc import Callable

USER_ERROR_EXIT = 2  # argparse's status for a bad command line; ours for every bad input


class UserError(Exception):
    """A problem the user can fix; the message says what, where (file:line or key) and what to do."""

    prefix = "error"  #: how the printed line starts


class RunFailed(UserError):
    """The run finished its work but produced nothing usable (every step skipped, nothing evaluated);
    everything it wrote is kept for inspection."""

    prefix = "run failed"


def _debugging(argv: list[str] | None) -> bool:
    arguments = sys.argv[1:] if argv is None else argv
    return (
        os.environ.get("HARNESS_DEBUG", "") not in ("", "0")
        or "logging.level=debug" in arguments
        or logging.getLogger().getEffectiveLevel() <= logging.DEBUG
    )


def message_of(error: BaseException) -> str:
    """The user-facing text of ``error``: DataLoader workers re-raise an error with the worker's
    whole traceback in the message; keep only the error's own text then."""
    text = str(error).strip()
    if text.startswith("Caught ") and "Original Traceback" in text:
        last = text.splitlines()[-1]
        name = type(error).__name__
        text = last.split(f"{name}: ", 1)[1] if f"{name}: " in last else last
    return text


def report(error: UserError, debug: bool = False) -> None:
    """Print ``error`` for the user (rank-prefixed when several ranks run): its first line after
    the prefix, any further lines indented; with ``debug`` the traceback first."""
    if debug:
        traceback.print_exception(error)
    rank = os.environ.get("RANK")
    where = f"[rank {rank}] " if rank not in (None, "0") and os.environ.get("WORLD_SIZE", "1") != "1" else ""
    lines = message_of(error).splitlines() or [type(error).__name__]
    text = "\n".join([f"{where}{error.prefix}: {lines[0]}", *("    " + line for line in lines[1:])])
    print(text, file=sys.stderr, flush=True)


def entry_point(main: Callable[..., int]) -> Callable[..., int]:
    """Wrap a command's ``main(argv) -> exit status`` so that a :class:`UserError` ends as one
    clear message and status 2 (see the module docs)."""

    @functools.wraps(main)
    def run(argv: list[str] | None = None) -> int:
        try:
            return main(argv)
        except UserError as error:
            report(error, _debugging(argv))
            return USER_ERROR_EXIT

    return run
