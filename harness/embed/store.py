"""An embedding folder: shard files, the index and ``embeddings.json``, written so that a run can
be stopped at any point and continued.

Layout of ``DIR``::

    embeddings.json        the request (source, features, clips, inputs' fingerprint), then counts
    shard-000000.safetensors (or shard-000000.<feature>.npy)   features of up to N rows
    parts/000000.csv       job 0's index rows
    parts/000000.json      job 0 done: its files and their sizes, its counts (written last)
    index.csv              video,window,start_s,end_s,shard,row,error: every unit, in input order

A job is a fixed run of units (``rows_per_shard`` of them, or the samples of one input shard):
jobs are numbered in input order from the inputs alone, so a rerun finds the same jobs. A job's
part is written last, after its shard files, so a part whose files are all there at their sizes
marks a finished job, which a rerun skips; anything else of a job is written again.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from harness.core.errors import UserError
from harness.core.fileio import write_atomic
from harness.core.locking import give_back, take_flock
from harness.data.units import Unit
from harness.embed.shard_files import ShardFile, iter_index

EMBEDDINGS_FILE = "embeddings.json"
INDEX_FILE = "index.csv"
PARTS = "parts"
SPOOL = ".spool"
LOCK = ".lock"  #: held by the run writing the folder (its rank 0)
INDEX_COLUMNS = ("video", "window", "start_s", "end_s", "shard", "row", "error")


def shard_name(job: int, piece: int = 0) -> str:
    """``shard-000012`` (and ``shard-000012-1``... for a job of more than ``rows_per_shard`` rows)."""
    return f"shard-{job:06d}" + (f"-{piece}" if piece else "")


def differences(saved: dict[str, Any], request: dict[str, Any]) -> list[str]:
    """The keys whose values differ between two requests."""
    return sorted(key for key in set(saved) | set(request) if saved.get(key) != request.get(key))


class EmbeddingFolder:
    """``DIR`` (see the module docs) for features written as ``form`` (``safetensors`` or ``npy``)."""

    def __init__(self, folder: str | Path, form: str) -> None:
        self.folder, self.form = Path(folder), form
        self.parts = self.folder / PARTS

    def saved_request(self) -> dict[str, Any] | None:
        """The request of an earlier run into this folder (None: none, or unreadable)."""
        try:
            return json.loads((self.folder / EMBEDDINGS_FILE).read_text(encoding="utf-8"))["request"]
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def problem(self, request: dict[str, Any], overwrite: bool) -> str | None:
        """Why this run may not write here (read only): a folder holding something else, unless
        ``overwrite``. The same request continues an earlier run."""
        if self.folder.exists() and not self.folder.is_dir():
            return f"--output {self.folder} is a file; give a folder"
        if not self.folder.is_dir() or all(path.name == LOCK for path in self.folder.iterdir()):
            return None
        saved = self.saved_request()
        if saved is None:  # --overwrite included: it replaces embeddings, never a folder of other files
            return (f"--output {self.folder} is not empty and holds no embeddings of harness.embed; give an empty or "
                    "new folder")  # fmt: skip
        if saved != request and not overwrite:
            changed = ", ".join(differences(saved, request))
            return (f"--output {self.folder} holds embeddings of another command (it differs in {changed}); give "
                    "--overwrite to replace them, or another folder")  # fmt: skip
        return None

    def lock(self) -> int | None:
        """Take the folder (created) for this run, so that no second run writes into it at the same
        time; the descriptor to :meth:`unlock` (None where the filesystem has no flock)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        in_use = lambda holder: UserError(f"--output {self.folder} is being written by another harness.embed "  # noqa: E731
                                          f"({holder}); wait for it to finish, or give another folder")  # fmt: skip
        return take_flock(self.folder / LOCK, in_use, lambda holder: None)

    def unlock(self, descriptor: int | None) -> None:
        """Give back the lock :meth:`lock` took."""
        if descriptor is not None:
            give_back(descriptor)

    def prepare(self, request: dict[str, Any], overwrite: bool, inputs: list[str]) -> None:
        """Before any job (one process): with ``overwrite`` remove the embeddings there; remove
        what a stopped run left half written; record the request (the run is not complete)."""
        if overwrite:
            self.remove_embeddings()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.parts.mkdir(exist_ok=True)
        shutil.rmtree(self.folder / SPOOL, ignore_errors=True)
        for folder in (self.folder, self.parts):
            for left in folder.glob(".tmp-*"):  # write_atomic's temporary files of a stopped run
                left.unlink(missing_ok=True)
        (self.folder / INDEX_FILE).unlink(missing_ok=True)  # written again at the end
        self.write_description({"complete": False, "request": request, "inputs": inputs})

    def remove_embeddings(self) -> None:
        """Remove this folder's embeddings (only the files harness.embed writes)."""
        for path in [*self.folder.glob("shard-*.safetensors"), *self.folder.glob("shard-*.npy")]:
            path.unlink()
        for name in (PARTS, SPOOL):
            shutil.rmtree(self.folder / name, ignore_errors=True)
        for name in (INDEX_FILE, EMBEDDINGS_FILE):
            (self.folder / name).unlink(missing_ok=True)

    def write_description(self, values: dict[str, Any]) -> None:
        """``embeddings.json``, written atomically."""
        text = json.dumps(values, indent=2).encode()
        write_atomic(self.folder / EMBEDDINGS_FILE, lambda handle: handle.write(text))

    def part_path(self, job: int, suffix: str = ".json") -> Path:
        """``parts/000012.json`` (the job's files, sizes, shapes, counts: written last) or
        ``parts/000012.csv`` (its index rows)."""
        return self.parts / f"{job:06d}{suffix}"

    def read_part(self, job: int) -> dict[str, Any] | None:
        """The record of a finished job (None: not finished, or unreadable)."""
        try:
            return json.loads(self.part_path(job).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def is_done(self, job: int) -> bool:
        """Whether job ``job`` finished: its part is there and so is each of its files, at its size."""
        part = self.read_part(job)
        if part is None:
            return False
        files = {**part.get("files", {}), self.part_path(job, ".csv").name: part.get("index_bytes")}
        try:
            return all(self.folder_of(name).stat().st_size == size for name, size in files.items())
        except (OSError, AttributeError):
            return False

    def folder_of(self, name: str) -> Path:
        """Where a file a part names lives: index rows under ``parts/``, features beside the index."""
        return self.parts / name if name.endswith(".csv") else self.folder / name

    def spool(self, rank: int) -> Path:
        """This rank's folder of spool files (rows appended before a shard file is written)."""
        return self.folder / SPOOL / f"r{rank}"

    def start_job(self, job: int) -> None:
        """Remove what an unfinished earlier try of ``job`` left (its part, its shard files)."""
        self.part_path(job).unlink(missing_ok=True)
        self.part_path(job, ".csv").unlink(missing_ok=True)
        for path in self.folder.glob(f"{shard_name(job)}[.-]*"):
            path.unlink(missing_ok=True)

    def finish_job(self, job: int, files: dict[str, int], rows: list[list], shapes: dict[str, list[int]]) -> None:
        """Mark ``job`` done: its index rows, then its part (files and sizes, feature shapes, counts)."""
        text = io.StringIO(newline="")
        csv.writer(text).writerows(rows)
        data = text.getvalue().encode()
        write_atomic(self.part_path(job, ".csv"), lambda handle: handle.write(data))
        shards = [row[4] for row in rows if row[4]]
        part = {"files": files, "shapes": shapes, "index_bytes": len(data), "rows": len(rows),
                "embedded": len(shards), "shards": len(set(shards))}  # fmt: skip
        text = json.dumps(part).encode()
        write_atomic(self.part_path(job), lambda handle: handle.write(text))

    def merge(self, jobs: int, description: dict[str, Any]) -> dict[str, int]:
        """Write ``index.csv`` from the parts of ``jobs`` jobs (in job order, streamed) and the
        complete ``embeddings.json`` (``description`` plus features, files and counts); returns the counts."""
        counts = {"rows": 0, "embedded": 0, "failed": 0, "shards": 0}
        shapes: dict[str, list[int]] = {}

        def write(handle) -> None:
            handle.write((",".join(INDEX_COLUMNS) + "\r\n").encode())  # (csv's line ends, as the rows')
            for job in range(jobs):
                part = self.read_part(job)
                if part is None:
                    raise RuntimeError(f"{self.part_path(job)} is missing after every rank finished")
                shapes.update(part["shapes"])
                for key in ("rows", "embedded", "shards"):
                    counts[key] += part[key]
                with open(self.part_path(job, ".csv"), "rb") as rows:
                    shutil.copyfileobj(rows, handle)
            counts["failed"] = counts["rows"] - counts["embedded"]

        write_atomic(self.folder / INDEX_FILE, write)
        shutil.rmtree(self.folder / SPOOL, ignore_errors=True)
        features = {name: {"shape": shape, "dtype": "float32"} for name, shape in shapes.items()}
        files = "{shard}.safetensors" if self.form == "safetensors" else "{shard}.{feature}.npy"
        self.write_description({**description, "complete": True, "features": features, "files": files,
                                "index": INDEX_FILE, "counts": counts})  # fmt: skip
        return counts


class JobWriter:
    """What one job writes: its rows' features into shard files of at most ``rows_per_shard``
    rows, and its index rows; :meth:`finish` writes the part that marks it done."""

    def __init__(self, folder: EmbeddingFolder, job: int, rows_per_shard: int, rank: int) -> None:
        folder.start_job(job)
        self.folder, self.job, self.rows_per_shard, self.rank = folder, job, rows_per_shard, rank
        self.rows: list[tuple[tuple, list]] = []  # (unit order, index row)
        self.files: dict[str, int] = {}
        self.shapes: dict[str, list[int]] = {}
        self.pieces = 0
        self.shard: ShardFile | None = None

    def fail(self, unit: Unit, error: str) -> None:
        """An index row for a unit that could not be embedded."""
        self.rows.append((unit.order, index_row(unit, "", "", error)))

    def add(self, unit: Unit, values: dict[str, np.ndarray]) -> None:
        """One unit's features (``values[name]``: ``[1, *shape]``)."""
        if self.shard is not None and self.shard.rows >= self.rows_per_shard:
            self._close_shard()
        if self.shard is None:
            self.shard = ShardFile(self.folder.folder, shard_name(self.job, self.pieces), self.folder.form,
                                   self.folder.spool(self.rank))  # fmt: skip
            self.pieces += 1
        self.rows.append((unit.order, index_row(unit, self.shard.shard, self.shard.rows, "")))
        self.shard.append(values)
        self.shapes = {name: list(value.shape[1:]) for name, value in values.items()}

    def _close_shard(self) -> None:
        self.files.update(self.shard.finish())
        self.shard = None

    def finish(self) -> None:
        """Write the last shard file, then the part (rows in unit order)."""
        if self.shard is not None:
            self._close_shard()
        rows = [row for _, row in sorted(self.rows, key=lambda item: item[0])]
        self.folder.finish_job(self.job, self.files, rows, self.shapes)


def index_row(unit: Unit, shard: str, row: int | str, error: str) -> list:
    """``video, window, start_s, end_s, shard, row, error`` of a unit."""
    window = str(unit.order[1]) if unit.frames is not None else ""
    start, end = unit.seconds if unit.seconds is not None else ("", "")
    return [unit.video, window, start, end, shard, row, error]


def read_index(folder: str | Path) -> list[dict[str, str]]:
    """The rows of an embedding folder's ``index.csv`` (a complete run's), as dicts of strings."""
    return list(iter_index(folder))
