"""Feature files written row by row with bounded memory: rows are appended to one spool file per
feature on disk, and :meth:`ShardFile.finish` writes the final file (a ``.safetensors`` file with
every feature, or one ``.npy`` per feature) from the spools, atomically (temporary name, fsync,
rename). A file that exists is complete.
"""

from __future__ import annotations

import csv
import json
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from harness.core.errors import UserError
from harness.core.fileio import write_atomic

FORMATS = ("safetensors", "npy")  #: the feature file formats
_SAFETENSORS_DTYPES = {np.dtype("float32"): "F32", np.dtype("float16"): "F16"}
_COPY_CHUNK = 2**20  #: bytes copied at a time from a spool into the shard file


def shard_files(folder: Path, shard: str, features: list[str], form: str) -> list[Path]:
    """The files of shard ``shard`` (a name such as ``shard-000000``) in ``folder``."""
    if form == "safetensors":
        return [folder / f"{shard}.safetensors"]
    return [folder / f"{shard}.{name}.npy" for name in features]


class ShardFile:
    """One shard being written: ``append`` rows (a batch of each feature), then ``finish``.

    Args:
        folder: where the shard's files go.
        shard: its name (files ``{shard}.safetensors`` or ``{shard}.{feature}.npy``).
        form: ``safetensors`` or ``npy``.
        spool: a folder for the spool files (removed by ``finish`` / ``discard``).
    """

    def __init__(self, folder: Path, shard: str, form: str, spool: Path) -> None:
        if form not in FORMATS:
            raise ValueError(f"format {form!r}: expected one of {FORMATS}")
        self.folder, self.shard, self.form = folder, shard, form
        self.spool = spool / shard
        self.spool.mkdir(parents=True, exist_ok=True)
        self.rows = 0
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.dtypes: dict[str, np.dtype] = {}
        self.handles: dict[str, object] = {}

    def append(self, values: dict[str, np.ndarray]) -> None:
        """Add rows: ``values[name]`` is ``[n, *row shape]``, the same ``n`` for every feature."""
        counts = {len(value) for value in values.values()}
        if len(counts) != 1:
            raise ValueError(f"features with different row counts: { {k: len(v) for k, v in values.items()} }")
        for name, value in values.items():
            value = np.ascontiguousarray(value)
            if name not in self.handles:
                self.shapes[name], self.dtypes[name] = value.shape[1:], value.dtype
                self.handles[name] = open(self.spool / name, "wb")  # noqa: SIM115  (closed by finish/discard)
            elif (value.shape[1:], value.dtype) != (self.shapes[name], self.dtypes[name]):
                raise ValueError(f"{name}: rows of {value.shape[1:]} {value.dtype} after {self.shapes[name]} "
                                 f"{self.dtypes[name]}")  # fmt: skip
            self.handles[name].write(value.tobytes())
        self.rows += counts.pop()

    def _close_spools(self) -> None:
        for handle in self.handles.values():
            handle.close()

    def finish(self) -> dict[str, int]:
        """Write the shard's files (none when no row was added); returns ``{file name: size}``."""
        self._close_spools()
        written = {}
        if self.rows:
            if self.form == "safetensors":
                path = self.folder / f"{self.shard}.safetensors"
                write_atomic(path, self._write_safetensors)
                written[path.name] = path.stat().st_size
            else:
                for name in self.handles:
                    path = self.folder / f"{self.shard}.{name}.npy"
                    write_atomic(path, lambda handle, name=name: self._write_npy(handle, name))
                    written[path.name] = path.stat().st_size
        shutil.rmtree(self.spool, ignore_errors=True)
        return written

    def discard(self) -> None:
        """Drop the rows (nothing is written)."""
        self._close_spools()
        shutil.rmtree(self.spool, ignore_errors=True)

    def _copy(self, name: str, handle) -> None:
        with open(self.spool / name, "rb") as source:
            shutil.copyfileobj(source, handle, _COPY_CHUNK)

    def _write_safetensors(self, handle) -> None:
        header: dict[str, object] = {"__metadata__": {"format": "pt", "rows": str(self.rows)}}
        offset = 0
        for name in self.handles:
            size = (self.spool / name).stat().st_size
            shape = [self.rows, *self.shapes[name]]
            header[name] = {"dtype": _SAFETENSORS_DTYPES[self.dtypes[name]], "shape": shape,
                            "data_offsets": [offset, offset + size]}  # fmt: skip
            offset += size
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned, as safetensors writes it
        handle.write(struct.pack("<Q", len(text)) + text)
        for name in self.handles:
            self._copy(name, handle)

    def _write_npy(self, handle, name: str) -> None:
        header = {"descr": np.lib.format.dtype_to_descr(self.dtypes[name]), "fortran_order": False,
                  "shape": (self.rows, *self.shapes[name])}  # fmt: skip
        np.lib.format.write_array_header_1_0(handle, header)
        self._copy(name, handle)


def read_shard(folder: str | Path, shard: str, features: list[str] | None = None) -> dict[str, np.ndarray]:
    """The features of shard ``shard`` of an embedding folder as arrays ``[rows, ...]``
    (memory-mapped: nothing is read until used); ``features`` picks some (default: all)."""
    folder = Path(folder)
    path = folder / f"{shard}.safetensors"
    if path.is_file():
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        header.pop("__metadata__", None)
        mapped = np.memmap(path, dtype=np.uint8, mode="r")
        out = {}
        for name, entry in header.items():
            if features is None or name in features:
                start, end = entry["data_offsets"]
                dtype = {"F32": np.float32, "F16": np.float16}[entry["dtype"]]
                out[name] = mapped[8 + length + start : 8 + length + end].view(dtype).reshape(entry["shape"])
        return out
    names = {file.name[len(shard) + 1 : -len(".npy")]: file for file in sorted(folder.glob(f"{shard}.*.npy"))}
    return {name: np.load(file, mmap_mode="r") for name, file in names.items() if features is None or name in features}


def iter_index(folder: str | Path) -> Iterator[dict[str, str]]:
    """The rows of an embedding folder's ``index.csv`` (a complete run's) as dicts of strings,
    streamed (a folder of millions of rows is read a row at a time)."""
    path = Path(folder) / "index.csv"
    if not path.is_file():
        raise UserError(f"{path} not found: is {folder} a finished harness.embed output (rerun the command)?")
    with open(path, newline="", encoding="utf-8") as handle:
        yield from csv.DictReader(handle)
