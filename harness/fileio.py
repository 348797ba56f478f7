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
