"""What the classifier is trained for: one class per video (softmax, cross-entropy, top-k
accuracy), several (``meta.multi_label``: sigmoid, binary cross-entropy, mAP), or one class in
each of several label sets (``meta.label_sets``: a softmax and a cross-entropy per set, summed),
with optional per-class loss weights. The trainer and the evaluation ask the objective; nothing
else tells them apart.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

from harness.config import Config, ConfigError
from harness.training.label_sets import LabelSets
from harness.training.metrics import EvalAccumulator, set_columns, topk_correct
from harness.training.mixup import smooth_one_hot, soft_cross_entropy
from harness.training.multilabel import MultiLabelAccumulator, multi_hot
from harness.training.set_metrics import LabelSetAccumulator

log = logging.getLogger(__name__)


class Objective:
    """Single-label classification: cross-entropy (with label smoothing and class weights) over
    ``[B]`` integer labels; soft ``[B, C]`` targets when the batch was mixed."""

    multi_label = False
    metric = "val_top1"  #: the validation metric that picks the best epoch
    eval_columns: tuple[str, ...] = ()  #: ``epochs.csv`` columns of this objective beyond the common ones
    label_sets: LabelSets | None = None  #: label-set runs: the sets' names and classes

    def __init__(self, num_classes: int, label_smoothing: float = 0.0, class_weights: torch.Tensor | None = None):
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.class_weights = class_weights

    def targets(self, labels: torch.Tensor) -> torch.Tensor:
        """Dense ``[B, C]`` targets of ``labels`` (label smoothing folded in), for mixing."""
        return smooth_one_hot(labels, self.num_classes, self.label_smoothing)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Mean loss of a batch in fp32, against ``targets`` when the batch was mixed."""
        weight = self._weight(logits.device)
        if targets is not None:
            return soft_cross_entropy(logits, targets * weight if weight is not None else targets)
        return F.cross_entropy(logits.float(), labels, weight=weight, label_smoothing=self.label_smoothing)

    def hits(self, logits: torch.Tensor, labels: torch.Tensor) -> list[torch.Tensor]:
        """Top-1 and top-5 hits of a batch (no sync)."""
        return topk_correct(logits, labels, (1, 5))

    def accumulator(self, device: torch.device, rank: int = 0, world_size: int = 1):
        """A fresh validation accumulator."""
        return EvalAccumulator(self.num_classes, device)

    def _weight(self, device: torch.device) -> torch.Tensor | None:
        if self.class_weights is None:
            return None
        if self.class_weights.device != device:
            self.class_weights = self.class_weights.to(device)
        return self.class_weights


class MultiLabelObjective(Objective):
    """Sigmoid / binary cross-entropy over multi-hot targets; label smoothing moves each target
    toward ``smoothing / C`` as for one-hot targets; class weights scale each class's term."""

    multi_label = True
    metric = "val_map"
    eval_columns = ("val_map",)

    def targets(self, labels: torch.Tensor) -> torch.Tensor:
        hot = multi_hot(labels, self.num_classes)
        return hot * (1.0 - self.label_smoothing) + self.label_smoothing / self.num_classes

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        targets = self.targets(labels) if targets is None else targets
        weight = self._weight(logits.device)
        return F.binary_cross_entropy_with_logits(logits.float(), targets, weight=weight)

    def accumulator(self, device: torch.device, rank: int = 0, world_size: int = 1) -> MultiLabelAccumulator:
        return MultiLabelAccumulator(self.num_classes, device, rank, world_size)


class LabelSetObjective(Objective):
    """One class per set per video (``meta.label_sets``): the logits ``[B, sum(C_s)]`` are the
    sets' logits end to end (:class:`LabelSets`), the labels ``[B, S]``. The loss is the **sum** of
    the sets' cross-entropies (label smoothing within each set), as V-JEPA 2's EPIC-KITCHENS-100
    probe sums its verb, noun and action losses: each set's gradient is what it would be alone,
    however many sets there are. The training top-1 / top-5 are those of ``metric``: the sets'
    mean, or one set's (``meta.label_set_metric``)."""

    def __init__(self, sets: LabelSets, label_smoothing: float = 0.0, metric: str = "mean") -> None:
        super().__init__(sets.total, label_smoothing)
        self.label_sets, self.choice = sets, metric
        self.metric = selection_metric(metric)
        self.eval_columns = set_columns(sets.names)

    def targets(self, labels: torch.Tensor) -> torch.Tensor:
        """Each set's smoothed one-hot ``[B, C_s]`` laid end to end, ``[B, sum(C_s)]`` (mixup mixes
        them as one vector; :meth:`loss` cuts them back per set)."""
        parts = zip(self.label_sets.columns(labels), self.label_sets.sizes)
        return torch.cat([smooth_one_hot(column, size, self.label_smoothing) for column, size in parts], dim=1)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """The sum over sets of each set's mean cross-entropy, in fp32 (against ``targets`` when the
        batch was mixed)."""
        parts = self.label_sets.split(logits)
        if targets is not None:
            losses = [soft_cross_entropy(part, target) for part, target in zip(parts, self.label_sets.split(targets))]
        else:
            losses = [F.cross_entropy(part.float(), column, label_smoothing=self.label_smoothing)
                      for part, column in zip(parts, self.label_sets.columns(labels))]  # fmt: skip
        return torch.stack(losses).sum()

    def hits(self, logits: torch.Tensor, labels: torch.Tensor) -> list[torch.Tensor]:
        """Top-1 and top-5 hits of a batch: the sets' mean, or the chosen set's (no sync)."""
        per_set = [torch.stack(topk_correct(part, column, (1, 5))).float()
                   for part, column in zip(self.label_sets.split(logits), self.label_sets.columns(labels))]  # fmt: skip
        if self.choice == "mean":
            return list(torch.stack(per_set).mean(0))
        return list(per_set[self.label_sets.names.index(self.choice)])

    def accumulator(self, device: torch.device, rank: int = 0, world_size: int = 1) -> LabelSetAccumulator:
        return LabelSetAccumulator(self.label_sets, device, self.choice)


def selection_metric(label_set_metric: str | None) -> str:
    """The ``epochs.csv`` column that ranks a label-set run's epochs: ``val_top1`` (the sets' mean
    top-1) for ``mean``, else ``val_top1_<set>``."""
    return "val_top1" if label_set_metric in (None, "mean") else f"val_top1_{label_set_metric}"


def best_metric(config: Config) -> str:
    """The ``epochs.csv`` column that picks a run's best epoch (``summary.json``'s ``best_metric``)."""
    if config.meta.multi_label:
        return "val_map"
    return selection_metric(config.meta.label_set_metric if config.meta.label_sets else None)


def class_weights(setting, num_classes: int, counts: np.ndarray | None) -> torch.Tensor | None:
    """``optimization.class_weights`` as a ``[C]`` tensor: a list as given, ``auto`` from the
    training data's class ``counts`` as ``N / (C * count)`` (1 for a class without videos)."""
    if setting is None:
        return None
    if isinstance(setting, list):
        if len(setting) != num_classes:
            raise ConfigError(f"optimization.class_weights has {len(setting)} entries for {num_classes} classes")
        return torch.tensor(setting, dtype=torch.float32)
    if counts is None:
        raise ConfigError("optimization.class_weights=auto needs class counts: listings, or shards with manifests "
                          "(their class histograms); give the weights as a list instead")  # fmt: skip
    counts = np.asarray(counts, dtype=np.float64)[:num_classes]
    weights = np.where(counts > 0, counts.sum() / (num_classes * np.maximum(counts, 1)), 1.0)
    log.info("class weights (auto): %.3g to %.3g", weights.min(), weights.max())
    return torch.tensor(weights, dtype=torch.float32)


def build_objective(config: Config, num_classes: int, counts: np.ndarray | None,
                    sets: LabelSets | None = None) -> Objective:  # fmt: skip
    """The run's objective; ``counts``: training videos per class (for ``class_weights: auto``);
    ``sets``: a label-set run's sets (``meta.label_sets``, resolved)."""
    opt = config.optimization
    if sets is not None:
        return LabelSetObjective(sets, opt.label_smoothing, config.meta.label_set_metric)
    weights = class_weights(opt.class_weights, num_classes, counts)
    if config.meta.multi_label:
        return MultiLabelObjective(num_classes, opt.label_smoothing, weights)
    return Objective(num_classes, opt.label_smoothing, weights)
