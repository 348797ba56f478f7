"""Map-style dataset over video listings: sample clip indices, decode, transform. A listed still
image (``.jpg``, ``.png``...) is a 1-frame video, a listed folder a video of its numbered frames
(:func:`harness.data.decode.open_video`).

Robustness contract: a video that cannot be opened or decoded never crashes training. The
item is replaced by another video of the same source (bounded retries), the failure is logged
once with its path and counted: every video tried and every unusable one, per worker, in shared
memory. Whether there are too many is not this process's call: the trainer adds the counts of
all ranks up and compares them with ``data.max_failure_fraction``
(:mod:`harness.training.data_budget`), so the same data gets the same verdict on 1 rank or
1024. Bad and filtered videos are remembered in shared memory, so no worker decodes them again.

Randomness is derived from ``(seed, epoch, index, attempt)`` for every item, not from worker
state: the same item gets the same clips and augmentation whatever the number of workers, which
makes runs reproducible and mid-epoch resume exact.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from harness.core.errors import UserError
from harness.data.clips import TOO_LARGE, TOO_SHORT, SkippedVideo, load_clips
from harness.data.decode import DecodeError, resolve_backend
from harness.data.listing import Listing, VideoRecord, format_label, label_ids
from harness.data.loader import ClipItem, build_loader
from harness.data.sampling import ClipSpec, ClipSpecError
from harness.data.segments import segment_name
from harness.data.source import LoaderSettings

log = logging.getLogger(__name__)

# Per-record status flags kept in shared memory (TOO_SHORT, TOO_LARGE: harness.data.clips).
UNKNOWN, BAD = 0, 1
MAX_WORKERS = 64  # rows of the shared attempt counters (one per DataLoader worker)


class TooManyDecodeFailures(UserError, RuntimeError):
    """More videos failed to decode than the configured fraction allows."""


class VideoClipDataset(Dataset):
    """Labelled videos from one or more sources (listings), each with its own :class:`ClipSpec`.

    An item is a :class:`ClipItem`. Indices ``>= len(dataset)`` are accepted and mean another
    draw of video ``index % len(dataset)`` with its own augmentation (repeated augmentation).

    Args:
        sources: ``(listing, spec)`` per dataset (a :class:`Listing`, or records made in code);
            all specs must share ``frames_per_clip`` so that items stack into one batch.
        transform: clip transform (:class:`TrainTransform` or :class:`EvalTransform`).
        num_clips: temporal clips per video.
        train: random clip positions (with ``random_clip_sampling``) instead of centred ones.
        replace_failures: replace an unusable video by another of its source (training, the
            default when ``train``); otherwise the item is ``None`` and :func:`collate_clips`
            drops it, so evaluation counts every video once and never a stand-in.
        random_clip_sampling: random clip position in its segment when training.
        allow_clip_overlap: see :func:`harness.data.sampling.clip_starts`.
        decoder: ``auto``, ``torchcodec``, ``decord`` or ``pyav``.
        seed: base seed of the per-item random streams.
        max_retries: replacement videos tried for one item before giving up.
        min_frames: skip (and count) videos with fewer frames.
        max_file_bytes: skip (and count) files larger than this many bytes.
        decode_max_short_side: decode at a smaller size where the transform allows (``"auto"``),
            at most this short side (an integer), or at full size (0); see :class:`DecodeScale`.
        frame_fps: per source, the frame rate of its frame folders (None or 0: unknown); a
            listing line's own rate (its ``fps`` column) wins. Files carry their own rate.
    """

    def __init__(
        self,
        sources: Sequence[tuple[Listing | Sequence[VideoRecord], ClipSpec]],
        transform: Callable[[torch.Tensor], torch.Tensor | list[torch.Tensor]],
        *,
        num_clips: int = 1,
        train: bool = True,
        replace_failures: bool | None = None,
        random_clip_sampling: bool = True,
        allow_clip_overlap: bool = False,
        decoder: str = "auto",
        seed: int = 0,
        max_retries: int = 10,
        min_frames: int = 0,
        max_file_bytes: int | None = None,
        decode_max_short_side: int | str = 0,
        frame_fps: Sequence[float | None] | None = None,
    ) -> None:
        if not sources:
            raise ValueError("VideoClipDataset needs at least one source")
        lengths = {spec.frames_per_clip for _, spec in sources}
        if len(lengths) > 1:
            raise ValueError(f"sources mixed in one dataset need equal frames_per_clip, got {sorted(lengths)}")
        # Columns, not records: forked workers share these pages (see harness/data/listing_columns.py).
        self.listings = [r if isinstance(r, Listing) else Listing.from_records(list(r)) for r, _ in sources]
        self.specs = [spec for _, spec in sources]
        self.source_sizes = [len(listing) for listing in self.listings]
        self._source_starts = np.cumsum([0, *self.source_sizes])
        self._size = int(self._source_starts[-1])
        self.transform = transform
        self.num_clips = num_clips
        self.random = train and random_clip_sampling
        self.replace_failures = train if replace_failures is None else replace_failures
        self.allow_clip_overlap = allow_clip_overlap
        self.decoder = decoder
        resolve_backend(decoder)  # load the decoder library before workers fork (see decode.py)
        self.seed = seed
        self.max_retries = max_retries
        self.min_frames = min_frames
        self.max_file_bytes = max_file_bytes
        self.decode_max_short_side = decode_max_short_side
        self.frame_fps = list(frame_fps) if frame_fps is not None else [None] * len(sources)
        if len(self.frame_fps) != len(sources):
            raise ValueError(f"frame_fps has {len(self.frame_fps)} entries for {len(sources)} sources")
        # Shared memory: workers (fork or spawn) see the parent's epoch and each other's flags,
        # and count what they tried in their own row (no two processes write one counter).
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self._status = torch.zeros(self._size, dtype=torch.uint8).share_memory_()
        self._attempts = torch.zeros(MAX_WORKERS, 2, dtype=torch.int64).share_memory_()

    def __len__(self) -> int:
        return self._size

    def _locate(self, index: int) -> tuple[Listing, int]:
        source = self._source_of(index)
        return self.listings[source], index - int(self._source_starts[source])

    def path(self, index: int) -> str:
        """Path of video ``index`` (built from the listing's columns)."""
        listing, row = self._locate(index)
        return listing.path(row)

    def name(self, index: int) -> str:
        """How outputs and warnings name item ``index``: its path, or its segment's
        (``path#t=1.5,4``; :func:`~harness.data.segments.segment_name`)."""
        listing, row = self._locate(index)
        return segment_name(listing.path(row), listing.segment(row), listing.segment_unit)

    def label(self, index: int) -> int | tuple[int, ...]:
        """Label of video ``index``."""
        listing, row = self._locate(index)
        return listing.label(row)

    def frame_rate(self, index: int) -> float | None:
        """The frame rate a frame folder at ``index`` is read at: its line's (an ``fps`` column),
        else its source's ``frame_fps``; None when neither is known."""
        listing, row = self._locate(index)
        return listing.frame_rate(row) or self.frame_fps[self._source_of(index)] or None

    def set_epoch(self, epoch: int) -> None:
        """Select the random streams of ``epoch`` (visible to already running workers)."""
        self._epoch.fill_(epoch)

    def stats(self) -> dict[str, int]:
        """Counts so far, across all workers: distinct videos found unusable (``failed``) or
        filtered, and the videos tried (``attempts``; a replacement is another attempt) and how
        many of those were unusable (``failed_attempts``; a video known to be bad counts again
        each time it is drawn, so every epoch counts the same way on 1 rank or 1024)."""
        counts = torch.bincount(self._status.long(), minlength=4).tolist()
        attempts, failed_attempts = self.attempt_counts()
        return {"failed": counts[BAD], "too_short": counts[TOO_SHORT], "too_large": counts[TOO_LARGE],
                "attempts": attempts, "failed_attempts": failed_attempts}  # fmt: skip

    def attempt_counts(self) -> tuple[int, int]:
        """``(videos tried, unusable ones)`` so far over this rank's workers (see :meth:`stats`)."""
        attempts, failed = self._attempts.sum(0).tolist()
        return attempts, failed

    # ------------------------------------------------------------ VideoSource (data/source.py)
    num_classes: int | None = None
    multi_label: bool = False

    def size(self) -> int:
        """Videos listed."""
        return self._size

    def class_count(self) -> int:
        """1 + the largest label listed."""
        return 1 + max(int(listing.all_ids().max()) for listing in self.listings)

    def class_counts(self, num_classes: int) -> np.ndarray:
        """Listed videos of each class."""
        ids = np.concatenate([listing.all_ids() for listing in self.listings])
        return np.bincount(ids, minlength=num_classes)[:num_classes].astype(np.int64)

    def sampling_weights(self, power: float, source_weights: Sequence[float] | None) -> np.ndarray:
        """Each video's draw weight: ``(class count) ** -power`` (a multi-label video: its rarest
        class's), scaled so that each listing's total is its ``source_weights`` share."""
        counts = self.class_counts(self.class_count()).astype(np.float64)
        factor = np.maximum(counts, 1.0) ** -power
        parts = []
        for listing in self.listings:  # per video: the largest factor among its labels
            per_label = factor[listing.all_ids()]
            starts = np.concatenate(([0], np.cumsum(listing.label_counts())[:-1]))
            parts.append(np.maximum.reduceat(per_label, starts) if len(per_label) else per_label)
        weights = np.concatenate(parts)
        shares = source_weights if source_weights is not None else self.source_sizes
        for source, share in enumerate(shares):
            part = slice(self._source_starts[source], self._source_starts[source + 1])
            total = weights[part].sum()
            weights[part] *= share / total if total > 0 else 0.0
        return weights

    def label_problem(self, num_classes: int) -> str | None:
        """The first listed label at or above ``num_classes`` (or a line with several labels when
        the run is not multi-label), with its ``file:line``."""
        for listing in self.listings:
            several = np.flatnonzero(listing.label_counts() > 1)[:1] if not self.multi_label else []
            too_large = listing.lines_per_label()[listing.all_ids() >= num_classes][:1]
            first = min([*several, *too_large], default=None)
            if first is None:
                continue
            label, where = listing.label(int(first)), listing.where(int(first))
            if first in several:
                return (f"{where}: {len(label_ids(label))} labels ({format_label(label)}) on one line; a "
                        "multi-label listing needs meta.multi_label=true")  # fmt: skip
            return (f"{where}: label {max(label_ids(label))} is not one of the {num_classes} classes "
                    f"(ids 0..{num_classes - 1})")  # fmt: skip
        return None

    def make_loader(self, settings: LoaderSettings, train: bool) -> DataLoader:
        """This rank's share (see :func:`harness.data.loader.build_loader`)."""
        options = {"rank": settings.rank, "world_size": settings.world_size, "num_workers": settings.num_workers,
                   "pin_memory": settings.pin_memory, "persistent_workers": settings.persistent_workers}  # fmt: skip
        if not train:
            return build_loader(self, settings.batch_size, train=False, **options)
        samples = None
        if settings.batches_per_epoch is not None:
            samples = settings.batches_per_epoch * settings.batch_size * settings.world_size
        if settings.class_balance > 0:
            options["item_weights"] = self.sampling_weights(settings.class_balance, settings.source_weights)
        return build_loader(self, settings.batch_size, train=True, seed=settings.seed, num_samples_per_epoch=samples,
                            source_weights=settings.source_weights, repeats=settings.repeats, **options)  # fmt: skip

    def failed_paths(self) -> list[str]:
        """Paths of the videos (segments: their names, ``path#t=1.5,4``) that failed to decode so far."""
        return [self.name(i) for i in torch.nonzero(self._status == BAD).flatten().tolist()]

    def _source_of(self, index: int) -> int:
        return int(np.searchsorted(self._source_starts, index, side="right") - 1)

    def _rng(self, index: int, attempt: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, int(self._epoch), index, attempt])

    def _replacement(self, index: int, rng: np.random.Generator) -> int:
        source = self._source_of(index)
        return int(self._source_starts[source] + rng.integers(self.source_sizes[source]))

    def _mark(self, index: int, status: int, reason: str) -> None:
        """Remember video ``index`` as unusable or filtered (logged once, with its path)."""
        if int(self._status[index]) == UNKNOWN:
            self._status[index] = status
            level = logging.WARNING if status == BAD else logging.INFO
            log.log(level, "skipping video %s: %s", self.name(index), reason)

    def _count(self, failed: bool) -> None:
        """One video tried by this process (a worker's own row of the shared counters)."""
        info = get_worker_info()
        row = self._attempts.numpy()[info.id if info is not None else 0]  # a view: ~1 us, not ~40 through torch
        row[0] += 1
        row[1] += failed

    def _load(self, index: int, rng: np.random.Generator) -> ClipItem:
        listing, row = self._locate(index)
        path, segment = listing.path(row), listing.segment(row)
        if self.max_file_bytes is not None and os.path.getsize(path) > self.max_file_bytes:
            raise SkippedVideo(TOO_LARGE, f"file larger than {self.max_file_bytes} bytes")
        try:
            clips, clip_indices = load_clips(
                path,
                self.specs[self._source_of(index)],
                self.num_clips,
                self.transform,
                random=self.random,
                allow_clip_overlap=self.allow_clip_overlap,
                rng=rng,
                decoder=self.decoder,
                min_frames=self.min_frames,
                decode_max_short_side=self.decode_max_short_side,
                fps=self.frame_rate(index),
                segment=segment,
                segment_unit=listing.segment_unit,
            )
        except ClipSpecError as error:  # fps / duration sampling of a source without a frame rate: fatal, named
            hint = ("; a frame folder's rate is data.frame_folder_fps (per listing) or its line's fps column, or "
                    "sample with data.frame_step") if os.path.isdir(path) else ""  # fmt: skip
            raise ClipSpecError(f"{path}: {error}{hint}") from None
        return ClipItem(clips, listing.label(row), clip_indices, segment_name(path, segment, listing.segment_unit))

    def __getitem__(self, index: int) -> ClipItem | None:
        # ``index`` may be a repeated-augmentation draw: the RNG follows it, the video wraps.
        # Whether the run has too many unusable videos is decided over all ranks by the trainer
        # (harness.training.data_budget) from the counts kept here, never by one worker.
        candidate = index % self._size
        for attempt in range(self.max_retries + 1):
            rng = self._rng(index, attempt)
            status = int(self._status.numpy()[candidate])
            if status == UNKNOWN:
                try:
                    item = self._load(candidate, rng)
                    self._count(failed=False)
                    return item
                except SkippedVideo as skip:
                    self._mark(candidate, skip.status, str(skip))
                except (DecodeError, OSError) as error:
                    self._mark(candidate, BAD, str(error))
                    self._count(failed=True)
            elif status == BAD:
                self._count(failed=True)  # known bad, drawn again: counts as on a rank that never saw it
            if not self.replace_failures:
                return None
            candidate = self._replacement(candidate, rng)
        raise TooManyDecodeFailures(
            f"item {index}: {self.max_retries + 1} videos in a row could not be used "
            f"(last tried: {self.name(candidate)}); see the warnings above"
        )
