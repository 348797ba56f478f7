"""Several label sets per video (``meta.label_sets``; EPIC-KITCHENS-100's verb / noun / action).

A video carries one class id in each of ``S`` label sets. The dataset item's label is the tuple of
its ``S`` ids (in the sets' order), so a batch's labels are ``int64 [B, S]``. One classifier serves
every set: its ``sum(C_s)`` logits are the sets' logits laid end to end (:class:`LabelSets` says
which slice is whose), so the encoder, the pooler, the probe grid, checkpoints and exports keep a
single ``num_classes`` (the total) and need nothing new. The objective
(:class:`harness.training.objective.LabelSetObjective`) and the metrics
(:mod:`harness.training.set_metrics`) slice it.

This module holds that layout and what resolves it from the config and the data: each set's
classes (``meta.label_sets: {verb: 97, ...}``, else 1 + the largest id of the set in the training
listings), its class names (``data.class_names: {verb: verbs.txt, ...}``, else the ids), and the
check that every listed video has one id per set, each below its set's class count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from harness.config import Config, ConfigError
from harness.data.files import VideoClipDataset
from harness.data.listing import Listing
from harness.data.source import VideoSource
from harness.training.classes import read_class_names


@dataclass(frozen=True)
class LabelSets:
    """The label sets of a run: their names and class counts, in the listing's column order.

    Set ``s`` owns logits ``[..., offsets[s] : offsets[s] + sizes[s]]`` of the classifier's
    ``total`` outputs and column ``s`` of a batch's ``[B, S]`` labels.
    """

    names: tuple[str, ...]
    sizes: tuple[int, ...]

    @property
    def total(self) -> int:
        """The classifier's outputs: every set's classes."""
        return sum(self.sizes)

    @property
    def offsets(self) -> tuple[int, ...]:
        """The first logit of each set."""
        return tuple(int(x) for x in np.cumsum([0, *self.sizes[:-1]]))

    def slices(self) -> list[slice]:
        """Each set's slice of the last dimension of the logits."""
        return [slice(start, start + size) for start, size in zip(self.offsets, self.sizes)]

    def split(self, logits: torch.Tensor) -> list[torch.Tensor]:
        """``[..., total]`` -> each set's ``[..., C_s]`` (views, no copy)."""
        return list(logits.split(list(self.sizes), dim=-1))

    def columns(self, labels: torch.Tensor) -> list[torch.Tensor]:
        """``[B, S]`` labels -> each set's ``[B]`` class ids (``[B]`` labels: a run of one set)."""
        labels = labels[:, None] if labels.dim() == 1 else labels
        return list(labels.unbind(1))

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Each set's softmax, laid end to end as the logits are (``[..., total]``, fp32)."""
        return torch.cat([part.float().softmax(-1) for part in self.split(logits)], dim=-1)

    def top(self, probabilities: torch.Tensor, k: int) -> list[list[tuple[int, float]]]:
        """Each set's ``k`` most probable classes (ids within the set) of one video's ``[total]``
        probabilities (:meth:`probabilities`)."""
        tops = []
        for part in self.split(probabilities):
            values, classes = part.topk(min(k, part.shape[-1]))
            tops.append(list(zip(classes.tolist(), values.tolist())))
        return tops

    def split_names(self, names: Sequence[str]) -> list[list[str]]:
        """The run's flat class names (every set's, end to end) -> each set's."""
        return [list(names[part]) for part in self.slices()]

    def as_dict(self) -> dict[str, int]:
        """``{set: classes}`` in order (checkpoints' ``meta.json``, exports' preprocessing)."""
        return dict(zip(self.names, self.sizes))

    @classmethod
    def from_dict(cls, sizes: dict[str, int]) -> LabelSets:
        """Inverse of :meth:`as_dict`."""
        return cls(tuple(sizes), tuple(int(size) for size in sizes.values()))

    def describe(self) -> str:
        """``verb (97 classes), noun (300 classes)``."""
        return ", ".join(f"{name} ({size} classes)" for name, size in zip(self.names, self.sizes))


def configured_sets(config: Config) -> dict[str, int]:
    """``meta.label_sets`` as ``{set: classes}`` (0: inferred from the data); empty when off."""
    sets = config.meta.label_sets
    if isinstance(sets, dict):
        return {str(name): int(size or 0) for name, size in sets.items()}
    return dict.fromkeys(map(str, sets or []), 0)


def resolve_label_sets(config: Config, train_set: VideoSource | None) -> tuple[LabelSets, list[str]]:
    """The run's :class:`LabelSets` and its flat class names (each set's, end to end).

    A set's classes are, first found: ``meta.label_sets``' count, the number of its names
    (``data.class_names.<set>``), 1 + its largest id in the training listings (``train_set``;
    without one, every set needs one of the others). Names must cover the classes exactly; a set
    without names is named by its ids.
    """
    wanted = configured_sets(config)
    files = config.data.class_names if isinstance(config.data.class_names, dict) else {}
    named = {name: read_class_names(files[name], f"data.class_names.{name}") for name in wanted if name in files}
    inferred = None
    unknown = [name for name in wanted if not (wanted[name] or name in named)]
    if unknown and train_set is None:
        first = unknown[0]
        raise ConfigError(f"meta.label_sets: the classes of {', '.join(unknown)} are unknown without training "
                          f"listings: give them ({{{first}: <classes>}}) or data.class_names.{first}")  # fmt: skip
    if unknown:
        inferred = inferred_sizes(train_set, list(wanted))
    sizes, names = [], []
    for index, (name, size) in enumerate(wanted.items()):
        size = size or (len(named[name]) if name in named else inferred[index])
        if name in named and len(named[name]) != size:
            raise ConfigError(f"data.class_names.{name}: {files[name]} names {len(named[name])} classes but the "
                              f"label set {name} has {size}: make them agree (meta.label_sets)")  # fmt: skip
        sizes.append(size)
        names += named.get(name) or [str(i) for i in range(size)]
    return LabelSets(tuple(wanted), tuple(sizes)), names


def _listings(source: VideoSource) -> list[Listing]:
    if not isinstance(source, VideoClipDataset):
        raise ConfigError("meta.label_sets reads listings (data.datasets, data.val_datasets), not shards")
    return source.listings


def set_matrix(listing: Listing, names: Sequence[str]) -> np.ndarray:
    """``[N, S]`` integers: each line's id in each of the sets ``names`` (lines checked to hold them;
    the header's columns as the listing holds them, ``int32``, not copied when in the run's order).

    A listing with a header names its sets' columns (``path,verb,noun,action,start,end``): they are
    picked by name. A listing without one gives one id per set on each line, in the run's order,
    joined by commas as several labels are (``path 3,40,7``)."""
    if listing.set_labels is not None:
        return listing.select_sets(names).set_labels
    return listing.all_ids().reshape(len(listing), len(names))


def inferred_sizes(train_set: VideoSource, names: Sequence[str]) -> list[int]:
    """1 + the largest id of each set over the training listings."""
    listings = _listings(train_set)
    for listing in listings:
        if problem := _count_problem(listing, names):
            raise ConfigError(f"data.datasets: {problem}")
    largest = np.max([set_matrix(listing, names).max(0) for listing in listings if len(listing)], axis=0)
    return [int(value) + 1 for value in largest]


def align_label_sets(source: VideoSource, names: Sequence[str]) -> None:
    """Make every listing of ``source`` whose header names label sets give its items' labels in
    the run's sets and order (:meth:`Listing.select_sets`); the checks come first
    (:func:`label_set_problem`)."""
    if isinstance(source, VideoClipDataset):
        source.listings = [listing.select_sets(names) if listing.label_sets is not None else listing
                           for listing in source.listings]  # fmt: skip


def unexpected_label_sets(source: VideoSource) -> str | None:
    """A listing whose header names label sets, in a run without ``meta.label_sets``."""
    for listing in source.listings if isinstance(source, VideoClipDataset) else []:
        if listing.label_sets is not None:
            first = ", ".join(listing.label_sets)
            return (f"{listing.source}: its header names the label sets {first}; train them with "
                    f"meta.label_sets=[{','.join(listing.label_sets)}]")  # fmt: skip
    return None


def label_set_problem(source: VideoSource, sets: LabelSets) -> str | None:
    """The first listed video without exactly one id per set, or with an id at or above its set's
    class count, with its ``file:line``; None when every label is usable."""
    for listing in _listings(source):
        if problem := _count_problem(listing, sets.names):
            return problem
        ids = set_matrix(listing, sets.names)
        beyond = ids >= np.array(sets.sizes)
        if beyond.any():
            line, column = (int(v) for v in np.argwhere(beyond)[0])
            name, size = sets.names[column], sets.sizes[column]
            return (f"{listing.where(line)}: {name} {ids[line, column]} is not one of the {size} {name} classes "
                    f"(ids 0..{size - 1})")  # fmt: skip
    return None


def _count_problem(listing: Listing, names: Sequence[str]) -> str | None:
    """The first line without one id per set (a listing of one id per line for a run of several
    sets, or the other way round), or a set that the listing's header does not have."""
    if listing.label_sets is not None:
        missing = [name for name in names if name not in listing.label_sets]
        if missing:
            return (f"{listing.source}: its header has the label sets {', '.join(listing.label_sets)}, not "
                    f"{missing[0]} (meta.label_sets names {', '.join(names)})")  # fmt: skip
        return None
    wrong = np.flatnonzero(listing.label_counts() != len(names))
    if not len(wrong):
        return None
    found = int(listing.label_counts()[wrong[0]])
    return (f"{listing.where(int(wrong[0]))}: {found} label(s) on the line, but the run has {len(names)} label "
            f"sets ({', '.join(names)}): give one class id per set, in that order")  # fmt: skip
