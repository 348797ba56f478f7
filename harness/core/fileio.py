"""Durable file writes shared by checkpoints and run artefacts."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def read_json(path: str | Path, error: type[Exception], what: str) -> Any:
    """The JSON document in ``path``; a missing, non-UTF-8 or malformed file raises ``error`` with a
    message that starts with ``what`` (e.g. the config key naming the file)."""
    path = Path(path)
    if path.is_dir():
        raise error(f"{what}: {path} is a folder; give the file")
    if not path.is_file():
        raise error(f"{what}: {path} not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as problem:
        raise error(f"{what}: {path} is not valid JSON ({problem})") from None


def write_atomic(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` durably: to a temporary name in the same folder, flushed and fsynced,
    then renamed over ``path`` (a crash leaves either the old file or the new one, never half)."""
    path = Path(path)
    temporary = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        with open(temporary, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def blocking_file(path: Path) -> Path | None:
    """The first existing ancestor of ``path`` (or ``path`` itself) that is not a folder, which
    stops ``path`` from being created as or inside a folder; None when there is none."""
    for part in reversed([path, *path.parents]):
        if part.exists() and not part.is_dir():
            return part
        if not part.exists():
            return None
    return None


def _nearest_existing(path: Path) -> Path:
    return next((part for part in [path, *path.parents] if part.exists()), Path("."))


def check_output_folder(path: str | Path, error: type[Exception], what: str) -> Path:
    """Before any work: ``path`` can be a folder we write into (it is one, or can be made one);
    otherwise raise ``error`` with a message that starts with ``what`` (e.g. ``--out``)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise error(f"{what}: {path} is a file, not a folder; give a folder")
    if (blocker := blocking_file(path)) is not None:
        raise error(f"{what}: cannot make the folder {path}: {blocker} is a file; give another path")
    if not os.access(_nearest_existing(path), os.W_OK):
        raise error(f"{what}: {_nearest_existing(path)} is not writable; give a folder you can write to")
    return path


def check_output_file(path: str | Path, error: type[Exception], what: str) -> Path:
    """Before any work: a file can be written at ``path`` (not a folder, its folder is or can be
    made one, writable); otherwise raise ``error`` with a message that starts with ``what``."""
    path = Path(path)
    if path.is_dir():
        raise error(f"{what}: {path} is a folder; give a file path")
    if (blocker := blocking_file(path.parent)) is not None:
        raise error(f"{what}: cannot write {path}: {blocker} is a file, not a folder; give another path")
    target = path if path.exists() else _nearest_existing(path.parent)
    if not os.access(target, os.W_OK):
        raise error(f"{what}: {target} is not writable; give a path you can write to")
    return path
