"""Stream WebDataset tar shards into every rank, with exact mid-epoch resume.

A shard is a tar file of samples ``key.mp4`` + ``key.cls`` (+ ``key.json``), as written by
``harness.prepare`` (any WebDataset video shard works; image samples, ``key.jpg`` + ``key.cls``,
read as 1-frame videos). Sources are manifests (``manifest.json``,
which also give the epoch length), brace patterns (``data/shard-{000000..000099}.tar``) or
``pipe:`` commands (``pipe:aws s3 cp s3://bucket/shard-{000000..000099}.tar -``).

Every DataLoader worker of every rank is one *stream*. Per epoch, each source's shards are
shuffled (seeded) and dealt to the ``ranks x workers`` streams; a stream reads ``interleave``
of its shards at once and draws each next sample from a random open shard (of a source chosen
by weight). A stream yields exactly its quota of samples, going through its shards again if
they run short, so every rank runs the same number of steps and none waits for another.

Everything random is a function of ``(seed, epoch, stream, draw)``, and the position of a stream
(where it is in its shard order, which shards are open and how many samples of each it has read,
how many draws it made) travels with every batch. The trainer saves the positions in its
checkpoint; a resumed run reopens the same shards, skips what was read and continues with exactly
the samples it had not seen.
"""

from __future__ import annotations

import copy
import json
import logging
import tarfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from harness.data.decode import DecodeError, resolve_backend
from harness.data.files import ClipItem, SkippedVideo, TooManyDecodeFailures
from harness.data.loader import ClipBatch, collate_clips
from harness.data.open_files import OpenFileBudget
from harness.data.sampling import ClipSpec
from harness.data.shard_integrity import ShardVerdicts
from harness.data.shard_io import (  # noqa: F401  (re-exported: the public shard API lives here)
    FAILED,
    VIDEO_EXTENSIONS,
    VISITED,
    Shard,
    ShardCounters,
    ShardError,
    check_open_file_limit,
    decode_sample,
    expand_braces,
    list_shards,
    manifest_classes,
    manifest_largest_label,
    read_samples,
)
from harness.data.source import LoaderSettings
from harness.data.workers import die_with_parent

log = logging.getLogger(__name__)
MAX_BAD_IN_A_ROW = 100  # unusable samples in a row after which a stream gives up (nothing usable left)


class ShardItem(NamedTuple):
    """A decoded sample and the position of its stream right after it."""

    item: ClipItem
    stream: int
    position: dict


def collate_shard_items(items: Sequence[ShardItem]) -> ClipBatch:
    """Collate like :func:`collate_clips`; the batch carries its stream's position."""
    batch = collate_clips([entry.item for entry in items])
    return batch._replace(position={"stream": items[-1].stream, "state": items[-1].position})


class ShardDataset(ShardCounters, IterableDataset):
    """Training samples streamed from shards; see the module docs for the scheme.

    Args:
        sources: shard lists, one per source (:func:`list_shards`).
        spec: clip sampling (frames per clip and step).
        transform: clip transform (:class:`~harness.data.TrainTransform`).
        weights: relative weight of each source (default equal per sample count).
        num_clips: temporal clips per sample.
        seed: base seed.
        interleave: shards a stream reads at once.
        resample: draw shards with replacement (allows fewer shards than streams).
        max_open_files: local shard files a stream keeps open at most (the others are parked:
            :mod:`harness.data.open_files`); ``pipe:`` readers count apart.
        quarantine: file that bad samples and shards are appended to (one per rank).
    """

    def __init__(
        self,
        sources: Sequence[Sequence[Shard]],
        spec: ClipSpec,
        transform: Callable,
        *,
        weights: Sequence[float] | None = None,
        num_clips: int = 1,
        train: bool = True,
        seed: int = 0,
        interleave: int = 4,
        resample: bool = False,
        max_open_files: int = 64,
        decoder: str = "auto",
        quarantine: str | Path | None = None,
        manifests: Sequence[str] = (),
    ) -> None:
        self.sources = [list(shards) for shards in sources]
        if not all(self.sources):
            raise ShardError("every shard source needs at least one shard")
        self.spec, self.transform, self.num_clips, self.train = spec, transform, num_clips, train
        sizes = [sum(s.samples or 0 for s in shards) for shards in self.sources]
        self.weights = np.asarray(weights if weights is not None else [max(n, 1) for n in sizes], dtype=float)
        self.weights = self.weights / self.weights.sum()
        self.seed, self.interleave, self.resample, self.decoder = seed, interleave, resample, decoder
        self.max_open_files = max_open_files
        # Checksum verdicts of every shard (numbered over the sources in order), shared by the workers.
        self.verdicts = ShardVerdicts(sum(len(shards) for shards in self.sources))
        self._first_index = np.cumsum([0] + [len(shards) for shards in self.sources])[:-1].tolist()
        # Load the decoder library here: forked workers (new ones every epoch) inherit it instead
        # of importing it again (torchcodec: ~1.5 s per worker).
        resolve_backend(decoder)
        ShardCounters.__init__(self, quarantine, manifests)
        self.rank, self.world_size, self.streams = 0, 1, 1
        self.epoch, self.quotas, self.start_states = 0, [0], [None]
        self.rotation = 0
        # Each epoch's plan (epoch, rotation, quotas, start positions) as JSON in shared memory:
        # persistent workers read it when their next epoch starts.
        self._plan = torch.zeros(1 << 20, dtype=torch.uint8).share_memory_()

    def publish(self) -> None:
        """Make the current epoch plan visible to (already running) workers."""
        plan = {"epoch": self.epoch, "rotation": self.rotation, "quotas": self.quotas, "states": self.start_states}
        blob = json.dumps(plan).encode()
        if len(blob) + 8 > len(self._plan):
            raise ShardError(f"stream positions too large to share ({len(blob)} bytes)")
        self._plan[:8] = torch.tensor(list(len(blob).to_bytes(8, "little")), dtype=torch.uint8)
        self._plan[8 : 8 + len(blob)] = torch.frombuffer(bytearray(blob), dtype=torch.uint8)

    def _read_plan(self) -> None:
        length = int.from_bytes(bytes(self._plan[:8].tolist()), "little")
        if length:
            plan = json.loads(bytes(self._plan[8 : 8 + length].numpy()))
            self.epoch, self.rotation = plan["epoch"], plan["rotation"]
            self.quotas, self.start_states = plan["quotas"], plan["states"]

    def total_samples(self) -> int | None:
        """Samples in all sources per the manifests (None when a source has no counts)."""
        if any(s.samples is None for shards in self.sources for s in shards):
            return None
        return sum(s.samples for shards in self.sources for s in shards)

    def size(self) -> int | None:
        """Samples per epoch per the manifests (None when unknown)."""
        return self.total_samples()

    def make_loader(self, settings: LoaderSettings, train: bool = True) -> ShardLoader:
        """This rank's streams: ``batches_per_epoch`` batches per epoch, else the manifests' (or
        ``samples_per_epoch``) samples over all ranks."""
        self.configure(settings.rank, settings.world_size, max(1, settings.num_workers))
        check_open_file_limit(self.sources, self.interleave, self.max_open_files, settings.num_workers)
        self.quarantine = settings.quarantine
        batches = settings.batches_per_epoch
        if batches is None:
            total = settings.samples_per_epoch or self.total_samples()
            if total is None:
                raise ShardError("shards without manifests: set shards.samples_per_epoch (or optimization.ipe)")
            batches = total // (settings.batch_size * settings.world_size)
        # Workers persist: each epoch's plan reaches them through shared memory.
        return ShardLoader(self, settings.batch_size, steps_per_epoch=batches, num_workers=settings.num_workers,
                           pin_memory=settings.pin_memory, persistent_workers=settings.num_workers > 0)  # fmt: skip

    def configure(self, rank: int, world_size: int, streams: int) -> None:
        """Place this dataset: rank ``rank`` of ``world_size``, ``streams`` workers per rank."""
        if streams > len(self.counters):
            raise ValueError(f"at most {len(self.counters)} workers per rank")
        self.rank, self.world_size, self.streams = rank, world_size, streams
        total_streams = world_size * streams
        for index, shards in enumerate(self.sources):
            if len(shards) < total_streams and not self.resample:
                raise ShardError(
                    f"source {index} has {len(shards)} shards for {world_size} ranks x {streams} workers = "
                    f"{total_streams} streams: every stream needs a shard. Prepare smaller shards "
                    "(harness.prepare --shard-size), use fewer workers, or set shards.resample=true"
                )

    # ---------------------------------------------------------------------- the stream
    def _global(self, stream: int) -> int:
        return self.rank * self.streams + stream

    def _fresh_state(self) -> dict:
        return {"draws": 0, "sources": [{"next": 0, "open": []} for _ in self.sources]}

    def _shard_at(self, source: int, stream: int, position: int) -> int:
        """Index (in the source's list) of the ``position``-th shard this stream reads."""
        shards = self.sources[source]
        global_stream, total = self._global(stream), self.world_size * self.streams
        if self.resample:
            rng = np.random.default_rng([self.seed, self.epoch, source, global_stream, position])
            return int(rng.integers(len(shards)))
        order = np.random.default_rng([self.seed, self.epoch, source]).permutation(len(shards))
        mine = order[global_stream::total]
        pass_number, offset = divmod(position, len(mine))
        if pass_number:  # a stream that needs more than its shards reads them again, reshuffled
            mine = np.random.default_rng([self.seed, self.epoch, source, global_stream, pass_number]).permutation(mine)
        return int(mine[offset])

    def _may_open(self, source: int, stream: int, source_state: dict) -> bool:
        """Open the next shard unless it starts a new pass while shards of this pass are open
        (so an epoch reads each of its shards once before reading any again)."""
        if self.resample or not source_state["open"]:
            return True
        shards_per_pass = len(range(self._global(stream), len(self.sources[source]), self.world_size * self.streams))
        return source_state["next"] % shards_per_pass != 0

    def _open(self, stream: int, budget: OpenFileBudget, source: int, shard_index: int,
              skip: int = 0) -> Iterator[tuple] | None:  # fmt: skip
        """A reader of a shard from sample ``skip`` on, or None when the shard fails its checksum
        (checked before anything is read; its samples from ``skip`` on count as tried and unusable)."""
        shard = self.sources[source][shard_index]
        problem = self.verdicts.problem(self._first_index[source] + shard_index, shard)
        if problem:
            self.broken_shard(stream, shard.url, problem, max((shard.samples or 0) - skip, 0))
            return None
        return read_samples(shard.url, skip, None, budget)  # verified whole: no second hash while reading

    def _fill(self, stream: int, budget: OpenFileBudget, source: int, state: dict, readers: list, most: int) -> int:
        """Open shards of ``source`` until ``shards.interleave`` are open (or the pass ends);
        returns how many failed their checksum (at most ``most``: then it stops)."""
        rejected = 0
        while len(state["open"]) < self.interleave and self._may_open(source, stream, state) and rejected < most:
            shard_index = self._shard_at(source, stream, state["next"])
            state["next"] += 1
            reader = self._open(stream, budget, source, shard_index)
            if reader is None:
                rejected += 1
                continue
            state["open"].append([shard_index, 0])
            readers.append(reader)
        return rejected

    def _raw_samples(self, stream: int, state: dict) -> Iterator[tuple[str, dict[str, bytes], str]]:
        """Raw samples of this stream from ``state`` on; updates ``state`` as it goes."""
        readers: list[list[Iterator]] = [[] for _ in self.sources]
        budget = OpenFileBudget(self.max_open_files)  # this stream's local shard files open at once
        for source, source_state in enumerate(state["sources"]):
            for entry in list(source_state["open"]):  # a resume: the shards open at the checkpoint
                reader = self._open(stream, budget, source, *entry)
                if reader is None:
                    source_state["open"].remove(entry)
                else:
                    readers[source].append(reader)
        opened_without_sample, limit = 0, 2 * sum(len(shards) for shards in self.sources) + self.interleave
        while True:
            if opened_without_sample > limit:
                raise ShardError(f"stream {self._global(stream)}: every shard it opened was empty, unreadable or "
                                 "altered (see the quarantine file)")  # fmt: skip
            rng = np.random.default_rng([self.seed, self.epoch, self._global(stream), state["draws"], 1])
            source = int(rng.choice(len(self.sources), p=self.weights))
            source_state = state["sources"][source]
            most = limit + 1 - opened_without_sample
            opened_without_sample += self._fill(stream, budget, source, source_state, readers[source], most)
            if not source_state["open"]:
                continue  # every shard it tried failed its checksum
            slot = int(rng.integers(len(source_state["open"])))
            shard_index = source_state["open"][slot][0]
            url = self.sources[source][shard_index].url
            try:
                key, parts = next(readers[source][slot])
            except StopIteration:
                key = None
                expected = self.sources[source][shard_index].samples
                if expected is not None and source_state["open"][slot][1] < expected:
                    read = source_state["open"][slot][1]
                    self.broken_shard(stream, url, f"truncated shard: {read} of {expected} samples readable",
                                      expected - read)  # fmt: skip
            except (tarfile.TarError, OSError, EOFError) as error:
                read, expected = source_state["open"][slot][1], self.sources[source][shard_index].samples
                self.broken_shard(stream, url, f"unreadable or truncated shard after {read} samples ({error})",
                                  max((expected or 0) - read, 0))  # fmt: skip
                key = None
            if key is None:  # shard finished (or broken): close it; the next draw refills
                opened_without_sample += 1 if source_state["open"][slot][1] == 0 else 0
                del source_state["open"][slot], readers[source][slot]
                continue
            opened_without_sample = 0
            source_state["open"][slot][1] += 1
            state["draws"] += 1
            yield key, parts, url

    def __iter__(self) -> Iterator[ShardItem]:
        self._read_plan()
        info = get_worker_info()
        worker = info.id if info is not None else 0
        stream = (self.rotation + worker) % self.streams
        state = copy.deepcopy(self.start_states[stream]) or self._fresh_state()
        quota = self.quotas[stream]
        produced = in_a_row = 0
        samples = self._raw_samples(stream, state)
        while produced < quota:
            key, parts, url = next(samples)
            rng = np.random.default_rng([self.seed, self.epoch, self._global(stream), state["draws"], 2])
            self.visited(stream)
            try:
                item = decode_sample(url, key, parts, self.spec, self.num_clips, self.transform, self.train, rng,
                                     self.decoder, self.num_classes, self.multi_label,
                                     self.decode_max_short_side)  # fmt: skip
            except (DecodeError, SkippedVideo, OSError) as error:
                # The trainer judges the share of bad samples over all ranks; a stream that finds
                # nothing usable at all stops here instead of reading its shards forever.
                self.bad_sample(stream, f"{url}#{key}", str(error))
                in_a_row += 1
                if in_a_row >= MAX_BAD_IN_A_ROW:
                    where = self.quarantine or "the warnings"
                    raise TooManyDecodeFailures(
                        f"{in_a_row} shard samples in a row could not be used (last: {url}#{key}: {error}); see {where}"
                    ) from None
                continue
            produced, in_a_row = produced + 1, 0
            yield ShardItem(item, stream, {**copy.deepcopy(state), "produced": produced})


class ShardLoader(DataLoader):
    """DataLoader over a :class:`ShardDataset` with exact-resume position tracking.

    ``steps_per_epoch`` batches per rank per epoch (equal on every rank); ``set_epoch(epoch,
    start)`` restarts an epoch, at the saved positions when ``start > 0``.
    """

    def __init__(self, dataset: ShardDataset, batch_size: int, steps_per_epoch: int, **kwargs: Any) -> None:
        # Its own generator: starting an iterator draws nothing from the global torch RNG (which
        # drop path uses), so a resumed run stays on the same random stream.
        super().__init__(
            dataset,
            batch_size=batch_size,
            collate_fn=collate_shard_items,
            drop_last=True,
            generator=torch.Generator(),
            worker_init_fn=die_with_parent,
            **kwargs,
        )
        self.streams = max(1, self.num_workers)
        self.steps_per_epoch = steps_per_epoch
        self.positions: dict[int, dict] = {}
        self.saved: dict | None = None
        self._last: int | None = None

    def __len__(self) -> int:
        return self.steps_per_epoch - sum(p["state"]["produced"] for p in self.positions.values()) // self.batch_size

    def _batches_per_stream(self) -> list[int]:
        steps, streams = self.steps_per_epoch, self.streams
        return [steps // streams + (s < steps % streams) for s in range(streams)]

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Prepare ``epoch``; with ``start > 0`` continue from :meth:`load_state_dict`'s positions."""
        dataset: ShardDataset = self.dataset
        dataset.epoch = epoch
        quotas = [n * self.batch_size for n in self._batches_per_stream()]
        states: list[dict | None] = [None] * self.streams
        consumed = [0] * self.streams
        self.positions = {}
        self._last = None
        dataset.rotation = 0
        saved = self.saved or {}
        placement = {"epoch": epoch, "streams": self.streams, "world_size": dataset.world_size}
        if start > 0 and all(saved.get(k) == v for k, v in placement.items()):
            for stream, position in saved["positions"].items():
                states[int(stream)] = position["state"]
                consumed[int(stream)] = position["state"]["produced"]
            self.positions = {int(k): v for k, v in saved["positions"].items()}
            dataset.rotation = saved["next_stream"]
        elif start > 0:
            # Another number of workers or ranks: the streams are dealt differently, so the exact
            # position cannot carry over. Keep the step count right and restart the epoch's stream.
            log.warning(
                "resuming epoch %d with %s (checkpoint: %s): the shard stream restarts from the start of "
                "the epoch, so some of its samples repeat; resume with the same data.num_workers and number "
                "of ranks for an exact continuation",
                epoch, placement, {k: saved.get(k) for k in placement},
            )  # fmt: skip
            remaining = max(0, self.steps_per_epoch - start // self.batch_size)
            quotas = [(remaining // self.streams + (s < remaining % self.streams)) * self.batch_size
                      for s in range(self.streams)]  # fmt: skip
        dataset.quotas = [quotas[s] - consumed[s] for s in range(self.streams)]
        dataset.start_states = [
            {**states[s], "produced": 0} if states[s] is not None else None for s in range(self.streams)
        ]
        dataset.publish()

    def __iter__(self) -> Iterator[ClipBatch]:
        for batch in super().__iter__():
            stream = batch.position["stream"]
            previous = self.positions.get(stream, {"state": {"produced": 0}})["state"]["produced"]
            state = {**batch.position["state"], "produced": previous + len(batch.labels)}
            self.positions[stream] = {"state": state}
            self._last = stream
            yield batch

    def state_dict(self) -> dict:
        """Positions of every stream of this rank (saved in checkpoints)."""
        last = self._last
        next_stream = (last + 1) % self.streams if last is not None else self.dataset.rotation
        return {
            "epoch": self.dataset.epoch,
            "streams": self.streams,
            "world_size": self.dataset.world_size,
            "positions": {str(k): v for k, v in self.positions.items()},
            "next_stream": next_stream,
        }

    def load_state_dict(self, state: dict | None) -> None:
        """Positions to continue from at the next ``set_epoch(epoch, start > 0)`` (None: none saved)."""
        self.saved = state
