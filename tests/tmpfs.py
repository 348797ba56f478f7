"""A real small filesystem for the tests that fill a disk: a tmpfs mounted for one test.

Mounting needs root (or CAP_SYS_ADMIN), which CI has (it runs as root in a container). Elsewhere the
test is skipped with the reason; under ``CI=true`` that skip is a failure (``tests/conftest.py``).
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def _mount(mount: Path, size: str) -> str | None:
    """Mount a tmpfs of ``size`` at ``mount``; None, or why it could not."""
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                              capture_output=True, text=True)  # fmt: skip
    except OSError as error:  # no mount command
        return str(error)
    return (done.stderr.strip() or f"mount: exit status {done.returncode}") if done.returncode else None


def _unmount(mount: Path) -> None:
    if subprocess.run(["umount", str(mount)], capture_output=True).returncode:
        subprocess.run(["umount", "-l", str(mount)], check=True)  # a file still open: detach it now


def cannot_mount() -> bool:
    """Whether this machine refuses to mount a tmpfs (the condition under which the tests skip)."""
    with tempfile.TemporaryDirectory() as folder:
        if _mount(Path(folder), "1m") is not None:
            return True
        _unmount(Path(folder))
        return False


@contextmanager
def mounted_tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` (``mount -o size=``: ``32m``, or bytes) at ``mount`` (created);
    unmount it after."""
    mount.mkdir(parents=True, exist_ok=True)
    if problem := _mount(mount, size):
        pytest.skip(f"a real full disk needs a tmpfs, and this machine cannot mount one ({problem})")
    try:
        yield mount
    finally:
        _unmount(mount)


def resize_tmpfs(mount: Path, size: int | str) -> None:
    """Grow or shrink the tmpfs at ``mount`` to ``size`` bytes (or ``64m``); files on it stay."""
    subprocess.run(["mount", "-o", f"remount,size={size}", "tmpfs", str(mount)], check=True)
