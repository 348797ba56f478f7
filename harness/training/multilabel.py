"""Multi-label classification (``meta.multi_label``, Charades-style): several classes per video.

Labels arrive as ``[B, K]`` class ids padded with -1 (``collate_clips``) and become multi-hot
targets; the loss is the binary cross-entropy of each class's logit (sigmoid), averaged over
classes and videos. Validation reports mean average precision (mAP: the mean over classes with
validation positives of each class's AP) with each class's AP, hit@1 / hit@5 (a true class among
the top 1 / 5 scores) as ``top1`` / ``top5``, and per-class precision / recall / F1 of the
predictions scoring at least :data:`THRESHOLD`.

This module is the maths (targets, AP, the accumulator); the objective the trainer asks,
:class:`harness.training.objective.MultiLabelObjective`, is built on it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from harness.training.metrics import EvalResult, class_scores, macro_means, topk_correct

THRESHOLD = 0.5  #: a class is predicted when its sigmoid score reaches this (precision/recall/F1)


def multi_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``[B]`` or ``[B, K]`` class ids (-1 = none) -> ``[B, num_classes]`` float 0/1 targets."""
    labels = labels[:, None] if labels.dim() == 1 else labels
    columns = torch.where(labels >= 0, labels, num_classes)  # pads go to a column that is dropped
    targets = torch.zeros(len(labels), num_classes + 1, device=labels.device)
    return targets.scatter_(1, columns, 1.0)[:, :num_classes]


def average_precision(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """AP of each class (columns of ``[N, C]`` ``scores`` and 0/1 ``targets``): the precision at
    each distinct score threshold weighted by the recall it adds (tied scores form one threshold);
    NaN for a class without positives."""
    out = np.full(scores.shape[1], np.nan)
    for c in range(scores.shape[1]):
        positives = targets[:, c].sum()
        if positives == 0:
            continue
        order = np.argsort(-scores[:, c], kind="stable")
        ranked, truth = scores[order, c], targets[order, c]
        ends = np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1]  # last index of each threshold
        true_pos = np.cumsum(truth)[ends]
        precision = true_pos / (ends + 1)
        recall = true_pos / positives
        out[c] = np.sum(np.diff(np.r_[0.0, recall]) * precision)
    return out


class MultiLabelAccumulator:
    """This rank's validation scores and sums; :meth:`result` gathers every rank's scores (mAP
    needs them all) with all-reduces of a zero-padded ``[ranks, most videos, C]`` buffer."""

    def __init__(self, num_classes: int, device: torch.device, rank: int = 0, world_size: int = 1) -> None:
        self.num_classes, self.device, self.rank, self.world_size = num_classes, device, rank, world_size
        self.k = min(5, num_classes)
        self.sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, hit@1, hit@5, count
        self.counts = torch.zeros(3, num_classes, dtype=torch.int64, device=device)  # TP, FP, FN at THRESHOLD
        self.scores: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []
        self.rows: list[tuple[str, list[int], list[int], list[float]]] = []

    @torch.no_grad()
    def add(self, logits: torch.Tensor, labels: torch.Tensor, videos: list[str]) -> None:
        """Record one batch of logits ``[B, C]`` and labels ``[B]`` / ``[B, K]``."""
        logits = logits.float()
        targets = multi_hot(labels, self.num_classes)
        loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(-1).sum()
        top1, top5 = topk_correct(logits, labels, (1, 5))
        count = torch.tensor(len(logits), device=self.device, dtype=torch.float64)
        self.sums += torch.stack([loss.double(), top1.double(), top5.double(), count])
        scores = logits.sigmoid()
        predicted, actual = scores >= THRESHOLD, targets.bool()
        self.counts += torch.stack([(predicted & actual).sum(0), (predicted & ~actual).sum(0),
                                    (~predicted & actual).sum(0)])  # fmt: skip
        self.scores.append(scores.cpu())
        self.targets.append(targets.bool().cpu())
        top_scores, classes = scores.topk(self.k, dim=-1)
        rows = labels[:, None] if labels.dim() == 1 else labels
        for video, ids, top, score in zip(videos, rows.tolist(), classes.tolist(), top_scores.tolist()):
            self.rows.append((video, [i for i in ids if i >= 0], top, score))

    def _gather(self, local: torch.Tensor, all_reduce) -> torch.Tensor:
        """Every rank's ``[n_r, C]`` rows, in rank order (one all-reduce of the sizes, one of the data)."""
        sizes = torch.zeros(self.world_size, dtype=torch.float64, device=self.device)
        sizes[self.rank] = len(local)
        all_reduce(sizes)
        sizes = [int(n) for n in sizes.tolist()]
        buffer = torch.zeros(self.world_size, max(sizes, default=0), self.num_classes, device=self.device)
        buffer[self.rank, : len(local)] = local.to(self.device, torch.float32)
        all_reduce(buffer)
        return torch.cat([buffer[r, :n] for r, n in enumerate(sizes)]).cpu()

    def result(self, all_reduce) -> EvalResult:
        """Metrics over all ranks; ``all_reduce(tensor)`` sums a tensor in place across ranks."""
        all_reduce(self.sums)
        all_reduce(self.counts)
        empty = torch.zeros(0, self.num_classes)
        scores = self._gather(torch.cat(self.scores) if self.scores else empty, all_reduce).numpy()
        targets = self._gather(torch.cat(self.targets).float() if self.targets else empty, all_reduce).numpy()
        loss_sum, top1, top5, count = self.sums.tolist()
        count = int(count)
        ap = average_precision(scores, targets)
        true_pos, false_pos, _ = (row.double().cpu().numpy() for row in self.counts)
        per_class = class_scores(true_pos, true_pos + false_pos, targets.sum(0))  # support: the positives
        per_class["ap"] = np.nan_to_num(ap)
        mean_ap = macro_means(per_class, ("ap",))["ap"]
        return EvalResult.from_sums(top1, top5, loss_sum, count, per_class, mean_ap=mean_ap)
