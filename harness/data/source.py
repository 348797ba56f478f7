"""The one protocol every kind of video data implements (listings, shards; training and validation).

The trainer never asks which kind it holds: it asks a source for its size, its classes, the
problems of its labels and its stats, and for this rank's loader given :class:`LoaderSettings`
(plain values, filled from the config by ``training/assemble.py``). A new kind of data implements
:class:`VideoSource` in its own module under ``data/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from torch.utils.data import DataLoader


@dataclass(frozen=True)
class LoaderSettings:
    """How one rank's loader of a source is made.

    Attributes:
        batch_size: videos per batch on this rank.
        rank, world_size: this process's place in the job.
        num_workers: decoding processes (0: in this process).
        pin_memory: pin host memory (only with a GPU).
        persistent_workers: keep workers between epochs.
        seed: sampling seed.
        batches_per_epoch: training batches per epoch on every rank (``ipe x accumulation``);
            None: what the data holds.
        samples_per_epoch: streams without known sizes: samples per epoch over all ranks.
        source_weights: per-source sampling weights (training).
        repeats: repeated augmentation (listings).
        class_balance: draw training videos with weight ``(class count) ** -class_balance``
            (listings; ``data.class_balanced_sampling``).
        quarantine: the file bad samples of this rank are appended to.
    """

    batch_size: int
    rank: int = 0
    world_size: int = 1
    num_workers: int = 0
    pin_memory: bool = False
    persistent_workers: bool = True
    seed: int = 0
    batches_per_epoch: int | None = None
    samples_per_epoch: int | None = None
    source_weights: tuple[float, ...] | None = None
    repeats: int = 1
    class_balance: float = 0.0
    quarantine: Path | None = None


@runtime_checkable
class VideoSource(Protocol):
    """What the trainer needs of its training or validation data."""

    num_classes: int | None  #: set at start-up: labels at or above it are bad samples
    multi_label: bool  #: set at start-up (meta.multi_label): several labels per video are allowed

    def size(self) -> int | None:
        """Videos (samples) per epoch when known."""

    def class_count(self) -> int | None:
        """Classes the data itself implies (1 + its largest label, a manifest's label map), or None."""

    def label_problem(self, num_classes: int) -> str | None:
        """Where a label is not below ``num_classes`` (``file:line: label 9 ...``), or where a video
        has several labels though :attr:`multi_label` is off; None when every label is usable."""

    def class_counts(self, num_classes: int) -> np.ndarray | None:
        """Videos (samples) of each class (a multi-label video counts for each of its classes),
        ``int64 [num_classes]``; None when the source cannot tell without reading its data."""

    def stats(self) -> dict[str, int]:
        """Failure counts so far (``failed`` at least), over this rank's workers."""

    def attempt_counts(self) -> tuple[int, int]:
        """Videos (samples) tried so far and how many of them were unusable, over this rank's
        workers (cheap: the trainer adds them up over all ranks, :mod:`harness.training.data_budget`)."""

    def make_loader(self, settings: LoaderSettings, train: bool) -> DataLoader:
        """This rank's loader (``set_epoch(epoch, start)``, ``len``; training loaders of streams
        also ``state_dict``/``load_state_dict`` for exact resume)."""
