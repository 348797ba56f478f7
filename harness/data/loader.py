"""The item every source yields (:class:`ClipItem`), samplers, collate and ``build_loader``:
batches ``[B, num_clips, C, T, H, W]`` for any rank.

Rank and world size are arguments, never read from globals, so the same code serves one laptop
process and rank 37 of 64. Samplers are pure functions of ``(seed, epoch)`` plus a start offset,
which is all the state needed to resume mid-epoch exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from harness.data.listing import label_ids
from harness.data.workers import die_with_parent


class ClipItem(NamedTuple):
    """One dataset item.

    Attributes:
        clips: ``num_clips * views`` tensors ``[C, T, H, W]``.
        label: class index (a tuple of them for a multi-label video).
        clip_indices: ``int64 [num_clips * views, T]`` source frame indices of every clip.
        video: path (or shard key) of the video actually used (a replacement after a failure).
    """

    clips: list[torch.Tensor]
    label: int | tuple[int, ...]
    clip_indices: torch.Tensor
    video: str


class ClipBatch(NamedTuple):
    """A collated batch.

    Attributes:
        clips: ``float32 [B, num_clips, C, T, H, W]`` (or ``uint8`` in channels-last memory when
            the transform runs with ``normalize=False``; see :func:`normalize_clips`).
        labels: ``int64 [B]``.
        clip_indices: ``int64 [B, num_clips, T]`` source frame indices of every clip.
        videos: path (or shard key) of each video.
        position: where a shard stream stood after this batch (exact resume); None for listings.
    """

    clips: torch.Tensor
    labels: torch.Tensor
    clip_indices: torch.Tensor
    videos: list[str]
    position: dict | None = None


def collate_clips(items: Sequence[ClipItem | None]) -> ClipBatch | None:
    """Stack dataset items into a :class:`ClipBatch`.

    ``None`` items (videos an evaluation dataset could not use) are dropped; a batch of only
    such items collates to ``None``.
    """
    items = [item for item in items if item is not None]
    if not items:
        return None
    first = items[0].clips[0]
    if first.dim() == 4 and first.permute(1, 2, 3, 0).is_contiguous():
        # uint8 clips in channels-last memory ([C, T, H, W] views of [T, H, W, C]): stack the
        # memory as it lies and return a view, so no process pays for the transpose. The model's
        # first op (normalisation on the accelerator) makes it contiguous for free.
        clips = torch.stack([torch.stack([c.permute(1, 2, 3, 0) for c in item.clips]) for item in items])
        clips = clips.permute(0, 1, 5, 2, 3, 4)
    else:
        clips = torch.stack([torch.stack(item.clips) for item in items])
    if any(isinstance(item.label, tuple) for item in items):  # multi-label: [B, most labels], -1 pads
        rows = [label_ids(item.label) for item in items]
        width = max(len(row) for row in rows)
        labels = torch.tensor([list(row) + [-1] * (width - len(row)) for row in rows], dtype=torch.int64)
    else:
        labels = torch.tensor([item.label for item in items], dtype=torch.int64)
    indices = torch.stack([item.clip_indices for item in items])
    return ClipBatch(clips, labels, indices, [item.video for item in items])


class _EpochSampler(Sampler[int]):
    """Common state: epoch, rank split, and the position to resume from."""

    def __init__(self, rank: int, world_size: int, seed: int) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the order of ``epoch`` and skip its first ``start`` samples of this rank."""
        self.epoch, self.start = epoch, start

    def _generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)

    def _order(self) -> list[int]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[int]:
        return iter(self._order()[self.start :])

    def __len__(self) -> int:
        return self.num_samples - self.start

    num_samples: int


class TrainSampler(_EpochSampler):
    """Shuffled indices split over ranks; every rank gets ``ceil(samples / world)`` of them.

    The epoch draws ``num_samples_per_epoch`` samples (default: the dataset size), going
    through fresh permutations as often as needed, so ranks have equal length (training needs
    equal step counts per rank; the few repeated samples do not matter for training).

    With ``repeats = r > 1`` (repeated augmentation) each drawn video appears ``r`` times in a
    row on the same rank (so in the same batch), as indices ``i, i + n, i + 2n, ...`` that the
    dataset maps to the same video with different augmentation; an epoch has the same number
    of samples, hence ``1/r`` as many distinct videos.
    """

    def __init__(
        self,
        size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        num_samples_per_epoch: int | None = None,
        repeats: int = 1,
    ) -> None:
        super().__init__(rank, world_size, seed)
        if repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats}")
        self.size, self.shuffle, self.repeats = size, shuffle, repeats
        self.num_samples = math.ceil((num_samples_per_epoch or size) / world_size)

    def _order(self) -> list[int]:
        generator = self._generator()
        total = self.num_samples * self.world_size
        draws = math.ceil(total / self.repeats)
        passes = [
            torch.randperm(self.size, generator=generator) if self.shuffle else torch.arange(self.size)
            for _ in range(math.ceil(draws / self.size))
        ]
        order = torch.cat(passes)[:draws]
        if self.repeats == 1:
            return order[self.rank :: self.world_size].tolist()
        copies = order[:, None] + self.size * torch.arange(self.repeats)
        order = copies.flatten()[:total]
        return order[self.rank * self.num_samples : (self.rank + 1) * self.num_samples].tolist()


class WeightedSourceSampler(_EpochSampler):
    """Mix several sources of a dataset in proportion to ``weights``.

    Each epoch draws ``num_samples_per_epoch`` indices (default: the dataset size): a source
    per draw with probability proportional to its weight, then a uniform item of that source.

    Args:
        source_sizes: items per source, in dataset order.
        weights: relative weight of each source.
    """

    def __init__(
        self,
        source_sizes: Sequence[int],
        weights: Sequence[float],
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        num_samples_per_epoch: int | None = None,
    ) -> None:
        super().__init__(rank, world_size, seed)
        if len(source_sizes) != len(weights):
            raise ValueError(f"{len(weights)} weights for {len(source_sizes)} datasets")
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"dataset weights must be >= 0 and not all 0, got {list(weights)}")
        self.source_sizes = list(source_sizes)
        self.weights = torch.tensor(weights, dtype=torch.float64)
        total = num_samples_per_epoch or sum(source_sizes)
        self.num_samples = math.ceil(total / world_size)

    def _order(self) -> list[int]:
        generator = self._generator()
        draws = self.num_samples * self.world_size
        sources = torch.multinomial(self.weights, draws, replacement=True, generator=generator)
        starts = torch.tensor([0, *self.source_sizes[:-1]]).cumsum(0)
        sizes = torch.tensor(self.source_sizes)
        offsets = (torch.rand(draws, generator=generator, dtype=torch.float64) * sizes[sources]).long()
        return (starts[sources] + offsets)[self.rank :: self.world_size].tolist()


class ItemWeightedSampler(_EpochSampler):
    """Draw ``num_samples_per_epoch`` indices (default: the dataset size) with replacement, each
    with probability proportional to its weight (class-balanced sampling). Inverse-CDF draws
    (``searchsorted``), so any number of items works (``torch.multinomial`` stops at 2^24)."""

    def __init__(self, weights: Sequence[float], rank: int = 0, world_size: int = 1, seed: int = 0,
                 num_samples_per_epoch: int | None = None) -> None:  # fmt: skip
        super().__init__(rank, world_size, seed)
        self.cumulative = torch.as_tensor(weights, dtype=torch.float64).cumsum(0)
        if not len(self.cumulative) or not self.cumulative[-1] > 0:
            raise ValueError("item weights must not all be 0")
        self.num_samples = math.ceil((num_samples_per_epoch or len(self.cumulative)) / world_size)

    def _order(self) -> list[int]:
        draws = torch.rand(self.num_samples * self.world_size, generator=self._generator(), dtype=torch.float64)
        order = torch.searchsorted(self.cumulative, draws * self.cumulative[-1], right=True)
        return order.clamp_(max=len(self.cumulative) - 1)[self.rank :: self.world_size].tolist()


class EvalSampler(_EpochSampler):
    """Deterministic, disjoint split for evaluation: rank ``r`` gets items ``r, r + world, ...``.

    No padding: ranks may differ by one item, so every item is counted exactly once when the
    per-rank sums are added up.
    """

    def __init__(self, size: int, rank: int = 0, world_size: int = 1) -> None:
        super().__init__(rank, world_size, seed=0)
        self.size = size
        self.num_samples = len(range(rank, size, world_size))

    def _order(self) -> list[int]:
        return list(range(self.rank, self.size, self.world_size))


class ClipLoader(DataLoader):
    """A ``DataLoader`` whose :meth:`set_epoch` reshuffles and reseeds the augmentation."""

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Prepare ``epoch``, skipping the first ``start`` samples of this rank (resume)."""
        self.sampler.set_epoch(epoch, start)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def state_dict(self) -> None:
        """Nothing: a listing's position is the number of samples taken (the trainer's
        ``batch_in_epoch``), given back through :meth:`set_epoch`'s ``start``."""
        return None

    def load_state_dict(self, state: None) -> None:
        """See :meth:`state_dict`."""


def build_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    train: bool,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    seed: int = 0,
    source_weights: Sequence[float] | None = None,
    num_samples_per_epoch: int | None = None,
    repeats: int = 1,
    item_weights: Sequence[float] | None = None,
    drop_last: bool | None = None,
    pin_memory: bool | None = None,
    persistent_workers: bool = True,
    prefetch_factor: int = 2,
    multiprocessing_context: str | None = None,
) -> ClipLoader:
    """Build the loader of one split for one rank.

    Args:
        dataset: a :class:`VideoClipDataset` (or any dataset of ``(clips, label, indices)``).
        batch_size: items per batch on this rank.
        train: shuffled (or weighted) sampling and ``drop_last``; else :class:`EvalSampler`.
        rank, world_size: this process's place in the job.
        num_workers: decoding processes; 0 decodes in the calling process.
        seed: sampling seed (the dataset has its own augmentation seed).
        source_weights: per-source weights (``datasets_weights``); training only.
        num_samples_per_epoch: training samples per epoch over all ranks (default: dataset size).
        repeats: repeated augmentation, see :class:`TrainSampler` (not with ``source_weights``).
        item_weights: per-item draw weights (class-balanced sampling, :class:`ItemWeightedSampler`;
            they already include ``source_weights``); training only.
        drop_last: defaults to ``train``.
        pin_memory: defaults to whether CUDA is available.
    """
    if train and item_weights is not None:
        sampler: _EpochSampler = ItemWeightedSampler(item_weights, rank, world_size, seed, num_samples_per_epoch)
    elif train and source_weights is not None:
        if repeats != 1:
            raise ValueError("repeated augmentation is not supported together with dataset weights")
        sampler = WeightedSourceSampler(
            dataset.source_sizes, source_weights, rank, world_size, seed, num_samples_per_epoch
        )
    elif train:
        sampler = TrainSampler(len(dataset), rank, world_size, seed, True, num_samples_per_epoch, repeats)
    else:
        sampler = EvalSampler(len(dataset), rank, world_size)
    workers = {"persistent_workers": persistent_workers, "prefetch_factor": prefetch_factor} if num_workers else {}
    return ClipLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_clips,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        drop_last=train if drop_last is None else drop_last,
        multiprocessing_context=multiprocessing_context if num_workers else None,
        worker_init_fn=die_with_parent,
        # Its own generator: starting an iterator then draws no number from the global torch RNG,
        # which the training process's drop path uses; a resumed run stays on the same stream.
        generator=torch.Generator().manual_seed(seed),
        **workers,
    )
