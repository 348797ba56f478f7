"""One manager for all resumable state, with atomic writes.

Layout of ``<run folder>/checkpoints/``::

    e0003_s00000120/      an immutable checkpoint: state.pt (model, optimizer, scaler, EMA,
                          train state, config; or the strategy's shards), meta.json and
                          rank_r{rank}.pt (each rank's RNG states and data position)
    latest  best  epoch_0010
                          pointer files naming a checkpoint folder

A checkpoint is written under a temporary name and renamed when complete; pointers are replaced
atomically after that. A crash at any moment leaves every pointer naming a complete checkpoint.
Folders no pointer names are deleted after each save, so disk use stays bounded.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.core.fileio import write_atomic
from harness.models.checkpoint_io import CheckpointError

log = logging.getLogger(__name__)

POINTERS = ("latest", "best")
META_FILE = "meta.json"  # strategy, world size, step, num_classes and config of a checkpoint
FILES_FILE = "files.json"  # size of every file of a checkpoint, to tell a damaged one on resume
TEMPORARY_PREFIX = ".tmp-"


def capture_rng() -> dict[str, Any]:
    """Python, NumPy, torch CPU and (when initialised) CUDA generator states of this process."""
    numpy_state = np.random.get_state(legacy=False)
    # Plain lists instead of an ndarray, so rank files load with ``weights_only=True``.
    numpy_state["state"] = {**numpy_state["state"], "key": numpy_state["state"]["key"].tolist()}
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    random.setstate(state["python"])
    numpy_state = dict(state["numpy"])
    numpy_state["state"] = {**numpy_state["state"], "key": np.asarray(numpy_state["state"]["key"], dtype=np.uint32)}
    np.random.set_state(numpy_state)
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_name(epoch: int, step: int) -> str:
    """Folder name of the checkpoint taken at ``epoch`` (0-based, in progress) and ``step``."""
    return f"e{epoch:04d}_s{step:08d}"


class CheckpointManager:
    """Saves and finds checkpoints of one run.

    Args:
        folder: the run folder (checkpoints go to ``folder/checkpoints``).
        rank: this process's rank (rank 0 renames folders and writes pointers).
        barrier: waits for all ranks (a no-op in one process).
    """

    def __init__(self, folder: str | Path, rank: int = 0, barrier: Callable[[], None] = lambda: None) -> None:
        self.root = Path(folder) / "checkpoints"
        self.rank = rank
        self.barrier = barrier
        if rank == 0:
            self.root.mkdir(parents=True, exist_ok=True)

    def save(
        self,
        name: str,
        write_state: Callable[[Path], None],
        pointers: Sequence[str],
        rank_state: dict[str, Any] | None = None,
    ) -> Path:
        """Write checkpoint ``name`` on every rank and point ``pointers`` (e.g. latest) at it.

        ``write_state(folder)`` writes the model/optimizer state into the temporary folder
        (each rank writes its own part); this process's RNG state and ``rank_state`` (e.g. its data
        position) are added as ``rank_r{rank}.pt``.
        """
        temporary = self.root / f"{TEMPORARY_PREFIX}{name}"
        final = self.root / name
        if self.rank == 0:
            shutil.rmtree(temporary, ignore_errors=True)
            temporary.mkdir(parents=True)
        self.barrier()
        try:
            write_state(temporary)
            own = {"rng": capture_rng(), **(rank_state or {})}
            write_atomic(temporary / f"rank_r{self.rank}.pt", lambda handle: torch.save(own, handle))
            self.barrier()
            if self.rank == 0:
                sizes = {str(p.relative_to(temporary)): p.stat().st_size for p in temporary.rglob("*") if p.is_file()}
                write_atomic(temporary / FILES_FILE, lambda handle: handle.write(json.dumps(sizes, indent=0).encode()))
        except BaseException as error:  # DCP's CheckpointException is a BaseException
            if not out_of_space(error, self.root):
                raise
            raise self._out_of_space(temporary, name) from error
        if self.rank == 0:
            if final.exists():  # the same step saved again (e.g. after a resume): replace it
                shutil.rmtree(final)
            os.rename(temporary, final)
            for pointer in pointers:
                self._point(pointer, name)
            self._remove_unreferenced()
        self.barrier()
        return final

    def _out_of_space(self, temporary: Path, name: str) -> CheckpointError:
        """Remove the partial checkpoint and say where space ran out and about how much is needed
        (the size of the previous checkpoint, else what was written before the disk filled)."""
        written = folder_bytes(temporary)
        shutil.rmtree(temporary, ignore_errors=True)
        latest = self.pointers().get("latest")
        needed = folder_bytes(self.root / latest) if latest else written
        free = shutil.disk_usage(self.root).free
        kept = f"checkpoints/latest ({latest}) is intact" if latest else "no earlier checkpoint exists"
        return CheckpointError(
            f"no space left on {filesystem_of(self.root)} while writing checkpoint {name}: about {needed:,} bytes "
            f"needed, {free:,} free; the partial checkpoint was removed and {kept}. Free space (or move the run "
            "folder) and rerun the same command to resume"
        )

    def _point(self, pointer: str, name: str) -> None:
        write_atomic(self.root / pointer, lambda handle: handle.write(f"{name}\n".encode()))

    def pointers(self) -> dict[str, str]:
        """Pointer name -> checkpoint folder name."""
        return read_pointers(self.root)

    def _remove_unreferenced(self) -> None:
        kept = set(self.pointers().values())
        for path in self.root.iterdir():
            if path.is_dir() and (path.name not in kept or path.name.startswith(TEMPORARY_PREFIX)):
                shutil.rmtree(path, ignore_errors=True)

    def find(self, pointer: str = "latest") -> Path | None:
        """The checkpoint folder ``pointer`` names, or None."""
        name = self.pointers().get(pointer)
        if name is None:
            return None
        path = self.root / name
        if not path.is_dir():
            raise CheckpointError(f"{self.root / pointer} names {name}, which does not exist")
        return path

    def restore_rank_state(self, checkpoint: Path) -> dict[str, Any] | None:
        """Restore this rank's RNG states from ``checkpoint`` and return the rest of its saved
        state (the data position); None when the checkpoint has nothing for this rank."""
        path = checkpoint / f"rank_r{self.rank}.pt"
        if not path.exists():
            log.warning("%s has no state for rank %d; continuing with fresh seeds", checkpoint, self.rank)
            return None
        state = torch.load(path, weights_only=True)
        restore_rng(state.pop("rng"))
        return state


def read_pointers(root: Path) -> dict[str, str]:
    """Pointer name -> checkpoint folder name, of a run's ``checkpoints`` folder."""
    if not root.is_dir():
        return {}
    return {
        path.name: path.read_text(encoding="utf-8").strip()
        for path in root.iterdir()
        if path.is_file() and not path.name.startswith(TEMPORARY_PREFIX)
    }


def alternatives(damaged: Path) -> str:
    """The complete checkpoints other than ``damaged`` that the pointers beside it name, as a hint
    to resume from one of them (nothing is chosen for the user)."""
    root = damaged.parent
    pointers = read_pointers(root) if root.name == "checkpoints" else {}  # only a run's folder has pointers
    found = sorted({(name, pointer) for pointer, name in pointers.items()
                    if name != damaged.name and damage(root / name) is None})  # fmt: skip
    if not found:
        return "no other complete checkpoint is kept"
    listed = ", ".join(f"{pointer} -> {root / name}" for name, pointer in found)
    return f"older complete checkpoints: {listed} (resume from one with meta.read_checkpoint=<folder>)"


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
# What torch's C++ writer says when a write fails; it keeps no errno (torch.save to a path, DeepSpeed).
TORCH_WRITE_FAILED = ("PytorchStreamWriter failed writing", "unexpected pos")
NEARLY_FULL = 64 << 20  # bytes free under which such a failure is taken for a full filesystem


def out_of_space(error: BaseException, root: Path) -> bool:
    """Whether ``error``, raised while writing a checkpoint under ``root``, is the filesystem running
    out of space (or quota): an ``OSError`` ENOSPC/EDQUOT anywhere in its chain (torch.save re-raises
    the writer's ``OSError`` as a ``RuntimeError``; DCP gathers each rank's failure), or torch's C++
    writer failing (it keeps no errno) while the filesystem is nearly full."""
    seen, pending = set(), [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in NO_SPACE:
            return True
        if isinstance(current, RuntimeError) and any(text in str(current) for text in TORCH_WRITE_FAILED):
            try:
                if shutil.disk_usage(root).free < NEARLY_FULL:
                    return True
            except OSError:
                pass
        failures = getattr(current, "failures", None)  # DCP: rank -> (exception, traceback)
        if isinstance(failures, dict):
            pending += [f[0] if isinstance(f, tuple) else f for f in failures.values()]
        pending += [current.__cause__, current.__context__]
    return False


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under ``folder`` (0 when it does not exist)."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def filesystem_of(path: Path) -> str:
    """``<device> (<type>) mounted at <mount point>`` of the filesystem holding ``path``."""
    mount = Path(path).resolve()
    while not os.path.ismount(mount):
        mount = mount.parent
    try:
        with open("/proc/mounts", encoding="utf-8") as handle:
            entries = [line.split()[:3] for line in handle]
        device, _, kind = next(e for e in reversed(entries) if e[1] == str(mount))
        return f"{device} ({kind}) mounted at {mount}"
    except (OSError, StopIteration, ValueError):
        return f"the filesystem mounted at {mount}"


def damage(checkpoint: Path) -> str | None:
    """What is wrong with a checkpoint folder (None when it is complete as written): a missing or
    unreadable ``meta.json``, or a file that is missing or has another size than when it was saved."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_dir():
        return "the folder does not exist"
    try:
        json.loads((checkpoint / META_FILE).read_text(encoding="utf-8"))
        sizes = json.loads((checkpoint / FILES_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        missing = Path(error.filename).name
        return None if missing == FILES_FILE else f"{missing} is missing"  # saved before sizes were kept
    except ValueError:
        return "its metadata is not valid JSON"
    for name, size in sizes.items():
        path = checkpoint / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} of the {size} bytes it was saved with (truncated or replaced)"
    return None


def read_checkpoint_meta(checkpoint: Path) -> dict[str, Any]:
    """The ``meta.json`` of a harness checkpoint folder."""
    path = Path(checkpoint) / META_FILE
    if not path.is_file():
        raise CheckpointError(f"{checkpoint} is not a harness checkpoint folder (no {META_FILE})")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise CheckpointError(f"{path}: not valid JSON ({error}); the checkpoint is damaged") from None


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder from a folder, a pointer file, a run folder (best, else latest) or a file."""
    path = Path(path)
    if path.is_file() and path.parent.name == "checkpoints" and path.suffix == "":
        return path.parent / path.read_text(encoding="utf-8").strip()
    if path.is_dir() and (path / "checkpoints").is_dir():
        manager = CheckpointManager(path)
        found = manager.find("best") or manager.find("latest")
        if found is None:
            raise CheckpointError(f"run folder {path} has no checkpoint yet")
        return found
    if path.exists():
        return path
    raise CheckpointError(f"checkpoint not found: {path}")
