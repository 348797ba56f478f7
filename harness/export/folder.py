"""An export folder is complete or absent, and says which files it holds.

The export is written into a temporary sibling folder (``.OUT.export-PID``) and published with
one rename of the folder. An earlier export at ``OUT`` is renamed aside (``.OUT.old-PID``), the new
one renamed in, then the old one removed: a reader sees the old export, the new one, or (after a
crash between the two renames) none, never a mix; the old one is then in ``.OUT.old-PID``.
``OUT`` may be absent, an empty folder or an earlier export (it holds ``model.json``); a file or a
folder of other files is refused before any work, and nothing is written. ``model.json`` records
the size and SHA-256 of every other file of the export, and loading refuses a file that differs.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness.core.errors import UserError
from harness.core.fileio import check_output_folder

MODEL_FILE = "model.json"
AGAIN = "export the model again"


class ExportError(UserError):
    """An export folder that is damaged, altered or not an export; the message names the file."""


def check_target(out: Path) -> None:
    """Refuse ``out`` before any work unless it is absent, an empty folder or an earlier export."""
    check_output_folder(out, ExportError, "export OUT")
    check_output_folder(out.parent, ExportError, "export OUT")  # the new folder is made beside it
    if out.is_dir() and any(out.iterdir()) and not (out / MODEL_FILE).is_file():
        raise ExportError(f"export OUT: {out} is not empty and holds no export (no {MODEL_FILE}); give a new or "
                          "empty folder, or an earlier export to replace")  # fmt: skip


@contextmanager
def staged(out: Path) -> Iterator[Path]:
    """A new temporary sibling folder of ``out`` to write the export into; it replaces ``out``
    when the block ends without an error, and is removed in any case (see the module docs)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.export-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
        replace_folder(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def replace_folder(new: Path, out: Path) -> None:
    """Put the finished folder ``new`` at ``out``, its files on disk first: one rename (over an
    empty folder too); an earlier export is renamed aside first and removed after."""
    for path in new.iterdir():
        _fsync(path)
    _fsync(new)
    if out.is_dir() and any(out.iterdir()):
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        os.rename(out, old)
        try:
            os.rename(new, out)
        except BaseException:
            os.rename(old, out)
            raise
        _fsync(out.parent)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(new, out)
        _fsync(out.parent)


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file, read in 8 MiB pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while piece := handle.read(8 << 20):
            digest.update(piece)
    return digest.hexdigest()


def file_records(folder: Path) -> dict[str, dict[str, Any]]:
    """``{name: {"bytes", "sha256"}}`` of every file of ``folder`` except ``model.json``."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name != MODEL_FILE)
    return {p.name: {"bytes": p.stat().st_size, "sha256": sha256_of(p)} for p in files}


def read_description(folder: Path) -> dict[str, Any]:
    """The ``model.json`` of an export folder (a damaged one is an :class:`ExportError`)."""
    import json

    path = folder / MODEL_FILE
    try:
        description = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ExportError(f"{path} cannot be read ({error}): it is damaged; {AGAIN}") from None
    if not isinstance(description, dict):
        raise ExportError(f"{path} is not a mapping of settings: it is damaged; {AGAIN}")
    return description


def verify_files(folder: Path, description: dict[str, Any]) -> None:
    """Every file ``model.json`` records is there with its size and SHA-256 (older exports
    record none)."""
    for name, record in (description.get("files") or {}).items():
        path = folder / name
        if not path.is_file():
            raise ExportError(f"{path} is missing: {folder / MODEL_FILE} describes it; {AGAIN}")
        size = path.stat().st_size
        if size != record.get("bytes") or sha256_of(path) != record.get("sha256"):
            what = f"has {size} bytes, {record.get('bytes')} when exported" if size != record.get("bytes") else (
                "has other contents than when exported (SHA-256 differs)")  # fmt: skip
            raise ExportError(f"{path} {what}: it is not the file {MODEL_FILE} describes (damaged or replaced); "
                              f"{AGAIN}")  # fmt: skip
