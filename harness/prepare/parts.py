"""Which slice of the input one machine prepares, and the names of its files.

``--part I/N`` (or, when not given, the SLURM array task: ``SLURM_ARRAY_TASK_ID`` against
``SLURM_ARRAY_TASK_MIN`` / ``_COUNT`` / ``_MAX`` / ``_STEP``) makes this run part ``I`` of ``N``
(``0 <= I < N``). Every file a part writes carries its tag ``-IIIIofNNNN`` (the whole input, part
0 of 1, has none), so N machines write into one output folder without clashing::

    <output>/prepare-0001of0004.json          the part's record (settings, finished, report)
    <output>/.staging-0001of0004/             its staged clips while it runs
    <output>/.lock-0001of0004                 its lock (one run of a part at a time)
    <output>/<split>/shard-0001of0004-000012.tar
    <output>/<split>/journal-0001of0004.jsonl  one line per finished shard while it runs
    <output>/<split>/manifest-0001of0004.json  written once, when the part's split is done

``python -m harness.prepare merge`` joins the part manifests into ``<split>/manifest.json``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from harness.core.errors import UserError

TAG = re.compile(r"-(\d+)of(\d+)")


@dataclass(frozen=True)
class Part:
    """Part ``index`` of ``count`` (zero-based); part 0 of 1 is the whole input."""

    index: int = 0
    count: int = 1

    @property
    def whole(self) -> bool:
        """This run prepares the whole input (no merge needed)."""
        return self.count == 1

    @property
    def tag(self) -> str:
        """What the names of this part's files carry: ``-0001of0004``, or nothing for the whole."""
        return "" if self.whole else f"-{self.index:04d}of{self.count:04d}"

    def shard_name(self, number: int) -> str:
        return f"shard{self.tag}-{number:06d}.tar"

    @property
    def shard_pattern(self) -> re.Pattern:
        """The names of this part's shards (and of nothing else)."""
        return re.compile(rf"shard{re.escape(self.tag)}-\d{{6}}\.tar")

    @property
    def manifest_name(self) -> str:
        return f"manifest{self.tag}.json"

    @property
    def journal_name(self) -> str:
        return f"journal{self.tag}.jsonl"

    @property
    def record_name(self) -> str:
        return f"prepare{self.tag}.json"

    @property
    def staging_name(self) -> str:
        return f".staging{self.tag}"

    @property
    def lock_name(self) -> str:
        """This part's lock file (see :mod:`harness.prepare.lock`)."""
        return f".lock{self.tag}"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def tag_of(name: str) -> Part | None:
    """The part a file name is tagged with (None: a file of a whole-input run)."""
    found = TAG.search(name)
    return Part(int(found.group(1)), int(found.group(2))) if found else None


def parse_part(text: str) -> Part:
    """``--part I/N``: part ``I`` (0..N-1) of ``N``."""
    try:
        index, count = (int(value) for value in text.split("/"))
    except ValueError:
        raise UserError(f"--part {text!r}: expected I/N, e.g. --part 0/4 (parts 0..3 of 4)") from None
    if count < 1 or not 0 <= index < count:
        raise UserError(f"--part {text}: I must be in 0..N-1 (parts are numbered from 0), N at least 1")
    return Part(index, count)


def part_from_environment(environ: Mapping[str, str]) -> Part | None:
    """The part of a SLURM array task (None outside an array). The array must be a range
    (``--array=0-15``, ``1-16``, ``0-30:2``, with or without a ``%`` limit); its tasks map to parts
    ``0..N-1`` in order."""
    task = environ.get("SLURM_ARRAY_TASK_ID")
    if not task:
        return None
    try:
        first = int(environ.get("SLURM_ARRAY_TASK_MIN") or 0)
        step = int(environ.get("SLURM_ARRAY_TASK_STEP") or 1)
        last = environ.get("SLURM_ARRAY_TASK_MAX")
        count = environ.get("SLURM_ARRAY_TASK_COUNT")
        span = (int(last) - first) // step + 1 if last else None
        count = int(count) if count else span
        index, offset = divmod(int(task) - first, step)
    except ValueError:
        raise UserError(f"SLURM_ARRAY_TASK_* variables are not numbers: task id {task!r}") from None
    if count is None:
        raise UserError("SLURM_ARRAY_TASK_ID is set without SLURM_ARRAY_TASK_COUNT or _MAX: pass --part I/N")
    if offset or not 0 <= index < count or (span is not None and span != count):
        raise UserError(f"SLURM array task {task} is not part of a range of {count} tasks (submit with "
                        f"--array=0-{count - 1}, or pass --part I/N)")  # fmt: skip
    return Part(index, count)


def resolve_part(text: str | None, environ: Mapping[str, str]) -> Part:
    """``--part`` when given, else the SLURM array task's part, else the whole input."""
    if text is not None:
        return parse_part(text)
    return part_from_environment(environ) or Part()
