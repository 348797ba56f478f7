"""Validation from shards: every sample exactly once over all ranks and workers, deterministic."""

from __future__ import annotations

import tarfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from harness.data.decode import DecodeError, resolve_backend
from harness.data.files import ClipItem, SkippedVideo
from harness.data.loader import collate_clips
from harness.data.sampling import ClipSpec
from harness.data.shard_integrity import ShardVerdicts
from harness.data.shard_io import Shard, ShardCounters, decode_sample, read_samples
from harness.data.source import LoaderSettings
from harness.data.workers import die_with_parent


class ShardEvalDataset(ShardCounters, IterableDataset):
    """Validation samples from shards: every sample exactly once over all ranks and workers
    (shard ``i`` goes to rank ``i % ranks``, then to worker ``i // ranks % workers``), in tar
    order, deterministic clips; an unusable sample is ``None`` (dropped by the collate) and
    counted, never replaced. A shard whose bytes differ from its manifest's SHA-256 is found before
    it is read (:mod:`harness.data.shard_integrity`): none of its samples counts in the metrics, and
    all of them count as unusable.
    """

    def __init__(self, shards: Sequence[Shard], spec: ClipSpec, transform: Callable, *, num_clips: int = 1,
                 decoder: str = "auto", quarantine: str | Path | None = None,
                 manifests: Sequence[str] = ()) -> None:  # fmt: skip
        self.shards, self.spec, self.transform = list(shards), spec, transform
        self.num_clips, self.decoder = num_clips, decoder
        resolve_backend(decoder)  # loaded once in the parent (see ShardDataset)
        ShardCounters.__init__(self, quarantine, manifests)
        self.verdicts = ShardVerdicts(len(self.shards))  # every evaluation reads the same shards: hashed once
        self.rank, self.world_size = 0, 1

    def total_samples(self) -> int | None:
        """Samples in all shards per the manifests (None when unknown)."""
        counts = [shard.samples for shard in self.shards]
        return None if None in counts else sum(counts)

    def size(self) -> int | None:
        """Samples per the manifests (None when unknown)."""
        return self.total_samples()

    def make_loader(self, settings: LoaderSettings, train: bool = False) -> ShardEvalLoader:
        """This rank's exact share: its shards, each sample once."""
        self.configure(settings.rank, settings.world_size)
        self.quarantine = settings.quarantine
        return ShardEvalLoader(self, settings.batch_size, num_workers=settings.num_workers)

    def configure(self, rank: int, world_size: int) -> None:
        """Place this dataset on rank ``rank`` of ``world_size``."""
        self.rank, self.world_size = rank, world_size

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Evaluation is the same every time."""

    def __iter__(self) -> Iterator[ClipItem | None]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for index in range(len(self.shards))[self.rank :: self.world_size][worker::workers]:
            yield from self._shard_items(index, worker)

    def _shard_items(self, index: int, worker: int) -> Iterator[ClipItem | None]:
        """The samples of shard ``index``, none when it fails its checksum; a shard that breaks
        off counts the samples it should still have held as unusable."""
        shard = self.shards[index]
        problem = self.verdicts.problem(index, shard)
        if problem:
            self.broken_shard(worker, shard.url, problem, shard.samples or 0)
            return
        count = 0
        try:
            for key, parts in read_samples(shard.url):  # verified whole above: no second hash
                count += 1
                self.visited(worker)
                yield self._decode(shard.url, key, parts, worker)
        except (tarfile.TarError, OSError, EOFError) as error:
            self.broken_shard(worker, shard.url, f"unreadable or truncated shard ({error})",
                              max((shard.samples or 0) - count, 0))  # fmt: skip
        else:
            if shard.samples is not None and count < shard.samples:
                self.broken_shard(worker, shard.url, f"truncated shard: {count} of {shard.samples} samples",
                                  shard.samples - count)  # fmt: skip

    def _decode(self, url: str, key: str, parts: dict[str, bytes], worker: int) -> ClipItem | None:
        try:
            return decode_sample(url, key, parts, self.spec, self.num_clips, self.transform, False,
                                 np.random.default_rng(0), self.decoder, self.num_classes,
                                 self.multi_label, self.decode_max_short_side)  # fmt: skip
        except (DecodeError, SkippedVideo, OSError) as error:
            self.bad_sample(worker, f"{url}#{key}", str(error))
            return None


class ShardEvalLoader(DataLoader):
    """DataLoader over a :class:`ShardEvalDataset` (whole batches, the last one may be short)."""

    def __init__(self, dataset: ShardEvalDataset, batch_size: int, **kwargs: Any) -> None:
        super().__init__(
            dataset, batch_size=batch_size, collate_fn=collate_clips, generator=torch.Generator(),
            worker_init_fn=die_with_parent, **kwargs,
        )  # fmt: skip

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Evaluation reads the same samples every time."""
