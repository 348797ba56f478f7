"""Validation metrics of a label-set run (``meta.label_sets``): every set scored on its own slice
of the logits (:class:`harness.training.label_sets.LabelSets`).

Per set: top-1, top-5, mean-class accuracy, the mean-class recall@5 EPIC-KITCHENS-100 reports
(per class, the share of its videos whose class is among the set's 5 best scores, averaged over
the classes that have videos in the evaluation set), per-class precision / recall / F1 / recall@5,
and the set's cross-entropy. Everything comes from per-class counts (videos, right at 1, right at 5,
predicted as), never a ``C x C`` confusion matrix: EPIC-KITCHENS-100's ~3800 action classes would
make that 115 MB per probe head. The run's overall numbers are the sets' means, its loss their
sum (what training minimises), and its ranking top-1 the sets' mean or one set's
(``meta.label_set_metric``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from harness.training.label_sets import LabelSets
from harness.training.metrics import EvalResult, class_scores

TOP = 5  #: the k of top-k accuracy and of mean-class recall@k


def class_recall_at_k(right: np.ndarray, support: np.ndarray) -> float:
    """Mean over the classes with videos (``support > 0``) of ``right / support``: each class's
    share of its videos whose class was among the top k (0 when no class has videos)."""
    right, support = np.asarray(right, dtype=np.float64), np.asarray(support, dtype=np.float64)
    present = support > 0
    return float((right[present] / support[present]).mean()) if present.any() else 0.0


class LabelSetAccumulator:
    """This rank's per-set counts over the validation batches of one probe head; :meth:`result`
    adds every rank's up with two all-reduces.

    Args:
        sets: the run's label sets.
        device: where the counts live.
        metric: ``mean`` or a set's name: which top-1 :attr:`EvalResult.score` is.
    """

    def __init__(self, sets: LabelSets, device: torch.device, metric: str = "mean") -> None:
        self.sets, self.device, self.metric = sets, device, metric
        # per class of every set, laid out as the logits: videos, right at 1, right at 5, predicted as
        self.counts = torch.zeros(4, sets.total, dtype=torch.int64, device=device)
        self.sums = torch.zeros(len(sets.names) + 1, dtype=torch.float64, device=device)  # loss per set, videos
        self.rows: list[tuple[str, list[int], list[list[int]], list[list[float]]]] = []

    @torch.no_grad()
    def add(self, logits: torch.Tensor, labels: torch.Tensor, videos: list[str]) -> None:
        """Record one batch of logits ``[B, total]`` and labels ``[B, S]``."""
        columns = self.sets.columns(labels)
        tops, scores = [], []
        for index, (part, truth, where) in enumerate(zip(self.sets.split(logits.float()), columns,
                                                         self.sets.slices())):  # fmt: skip
            classes = part.shape[-1]
            probabilities, top = part.softmax(-1).topk(min(TOP, classes), dim=-1)
            right = top == truth[:, None]
            counted = torch.stack([truth, torch.where(right[:, 0], truth, classes),
                                   torch.where(right.any(-1), truth, classes), top[:, 0]])  # fmt: skip
            for row, ids in enumerate(counted):  # a miss goes to the extra bin `classes`, dropped
                self.counts[row, where] += torch.bincount(ids, minlength=classes + 1)[:classes]
            self.sums[index] += F.cross_entropy(part, truth, reduction="sum").double()
            tops.append(top.tolist())
            scores.append(probabilities.tolist())
        self.sums[-1] += len(labels)
        truth_rows = torch.stack(columns, 1).tolist()
        for index, video in enumerate(videos):
            self.rows.append((video, truth_rows[index], [top[index] for top in tops], [s[index] for s in scores]))

    def result(self, all_reduce) -> EvalResult:
        """Metrics over all ranks; ``all_reduce(tensor)`` sums a tensor in place across ranks."""
        all_reduce(self.counts)
        all_reduce(self.sums)
        counts = self.counts.cpu().numpy().astype(np.float64)
        *losses, videos = self.sums.tolist()
        count = int(videos)
        per_set = {name: self._set_result(counts[:, where], loss, count)
                   for name, where, loss in zip(self.sets.names, self.sets.slices(), losses)}  # fmt: skip
        results = list(per_set.values())

        def mean(key: str) -> float:
            return float(np.mean([getattr(result, key) for result in results]))

        selected = mean("top1") if self.metric == "mean" else per_set[self.metric].top1
        return EvalResult(
            top1=mean("top1"),
            top5=mean("top5"),
            mean_class_accuracy=mean("mean_class_accuracy"),
            loss=float(sum(result.loss for result in results)),
            count=count,
            confusion=None,
            macro_precision=mean("macro_precision"),
            macro_recall=mean("macro_recall"),
            macro_f1=mean("macro_f1"),
            class_recall5=mean("class_recall5"),
            label_sets=per_set,
            selected=selected,
        )

    @staticmethod
    def _set_result(counts: np.ndarray, loss_sum: float, count: int) -> EvalResult:
        """One set's metrics from its ``[4, C]`` counts (videos, right at 1, right at 5, predicted)."""
        support, right1, right5, predicted = counts
        scores = class_scores(right1, predicted, support)
        with np.errstate(divide="ignore", invalid="ignore"):
            scores["recall5"] = np.where(support > 0, right5 / support, 0.0)
        return EvalResult.from_sums(float(right1.sum()), float(right5.sum()), loss_sum, count, scores,
                                    class_recall5=class_recall_at_k(right5, support))  # fmt: skip
