"""Progress on long work: a live bar on a terminal, plain lines in a log file.

A carriage-return bar written to a file (SLURM's output, ``> log 2>&1``) is one endless line of
overwrites. So :func:`progress` draws ``tqdm``'s bar only when the stream is a terminal; otherwise
it writes one plain line every ``HARNESS_PROGRESS_SECONDS`` seconds (default 30) and one at the
end: ``epoch 2/20: 310/1000 step (31%), 4.2 step/s, eta 2m44s, loss=0.8123``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any

DEFAULT_SECONDS = 30.0


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class PlainProgress:
    """The line-writing progress (the subset of ``tqdm``'s interface the harness uses)."""

    def __init__(self, iterable: Iterable | None, total: int | None, desc: str, unit: str, initial: int,
                 stream: IO[str], every: float) -> None:  # fmt: skip
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.n, self.start_n, self.stream, self.every = initial, initial, stream, every
        self.started = self.last = time.monotonic()
        self.postfix = ""
        self.closed = False
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            self.total = len(iterable)

    def __iter__(self) -> Iterator:
        for item in self.iterable:
            yield item
            self.update()
        self.close()

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def update(self, count: int = 1) -> None:
        self.n += count
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self._write()

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{key}={value}" for key, value in values.items())

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._write()

    def line(self) -> str:
        """The current progress as one line."""
        elapsed = time.monotonic() - self.started
        rate = (self.n - self.start_n) / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.desc}: {self.n}" + (f"/{self.total}" if self.total else "") + f" {self.unit}"]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f}%)"
        parts.append(f"{rate:.2f} {self.unit}/s")
        if self.total and rate > 0 and self.n < self.total:
            parts.append(f"eta {_duration((self.total - self.n) / rate)}")
        elif self.n >= (self.total or 0):
            parts.append(f"took {_duration(elapsed)}")
        if self.postfix:
            parts.append(self.postfix)
        return ", ".join(parts)

    def _write(self) -> None:
        print(self.line(), file=self.stream, flush=True)


class NoProgress:
    """Progress switched off: the same interface, nothing written."""

    def __init__(self, iterable: Iterable | None) -> None:
        self.iterable = iterable

    def __iter__(self) -> Iterator:
        return iter(self.iterable)

    def __enter__(self) -> NoProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def update(self, count: int = 1) -> None:
        pass

    def set_postfix(self, **values: Any) -> None:
        pass

    def close(self) -> None:
        pass


def progress(
    iterable: Iterable | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    initial: int = 0,
    enabled: bool = True,
    leave: bool = True,
    stream: IO[str] | None = None,
) -> Any:
    """A progress bar over ``iterable`` (or updated by hand with ``update``): ``tqdm`` on a
    terminal, :class:`PlainProgress` lines otherwise, nothing when not ``enabled``."""
    if not enabled:
        return NoProgress(iterable)
    stream = stream if stream is not None else sys.stderr
    if stream.isatty():
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, leave=leave, file=stream)
    every = float(os.environ.get("HARNESS_PROGRESS_SECONDS", DEFAULT_SECONDS))
    return PlainProgress(iterable, total, desc, unit, initial, stream, every)
