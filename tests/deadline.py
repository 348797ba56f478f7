"""How long the running test has before pytest-timeout stops it.

A process a test starts gets ``timeout=time_left()``: it is stopped (and the test fails with its
output) before pytest-timeout would kill the whole test with none. ``tests/conftest.py`` starts
the clock of every test.
"""

from __future__ import annotations

import time

_deadline: float | None = None  # time.monotonic() at which pytest-timeout stops the running test


def start(limit: float | None) -> None:
    """Called at the start of every test with its pytest-timeout limit (None or 0: no limit)."""
    global _deadline
    _deadline = time.monotonic() + limit if limit else None


def time_left(margin: float = 20.0) -> float:
    """Seconds left for a process started now, ``margin`` seconds kept for the test to report."""
    if _deadline is None:
        return 3600.0
    return max(1.0, _deadline - time.monotonic() - margin)
