"""Accuracy metrics and the evaluation accumulator (exact across ranks), plus its artefacts."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> list[torch.Tensor]:
    """Number of samples whose label is among the top-k logits, per k (tensors, no sync);
    ``[B, K]`` labels (multi-label, -1 pads): samples with any of their labels there."""
    k_max = min(max(ks), logits.shape[-1])
    top = logits.topk(k_max, dim=-1).indices
    hits = top == labels[:, None] if labels.dim() == 1 else (top[:, :, None] == labels[:, None, :]).any(-1)
    return [hits[:, : min(k, k_max)].any(dim=-1).sum() for k in ks]


#: each label set's columns in ``epochs.csv`` (``val_<metric>_<set>``; :func:`set_columns`)
SET_METRICS = ("top1", "top5", "recall5", "mean_class_acc", "loss")


def set_columns(names: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The ``epochs.csv`` columns a label-set run adds: the sets' mean recall@5, then per set
    :data:`SET_METRICS` (``val_top1_verb``, ``val_top5_verb``, ``val_recall5_verb``...)."""
    return ("val_recall5", *(f"val_{metric}_{name}" for name in names for metric in SET_METRICS))


@dataclass
class EvalResult:
    """Validation metrics over every usable video of all ranks (each counted once)."""

    top1: float
    top5: float
    mean_class_accuracy: float
    loss: float
    count: int
    confusion: torch.Tensor | None  #: ``int64 [num_classes, num_classes]``, rows = true label (None: multi-label)
    macro_precision: float = 0.0  #: mean over classes with validation videos of each class's precision
    macro_recall: float = 0.0  #: mean per-class recall (= mean_class_accuracy)
    macro_f1: float = 0.0  #: mean per-class F1
    head_top1: list[float] | None = None  #: top-1 of every probe head (multi-head runs); the rest is the best's
    best_head: int | None = None  #: index of the head with the best top-1 (multi-head runs)
    mean_ap: float | None = None  #: multi-label runs: mean average precision over classes
    per_class: dict[str, np.ndarray] | None = None  #: ``support``, ``precision``, ``recall``, ``f1`` (+ ``ap``)
    #: label-set runs: mean over the classes with validation videos of the share of each class's videos whose
    #: class is among the top 5 (EPIC-KITCHENS-100's mean top-5 recall); per set, and the sets' mean
    class_recall5: float | None = None
    label_sets: dict[str, EvalResult] | None = None  #: label-set runs: each set's metrics (the rest: the sets' mean)
    selected: float | None = None  #: label-set runs: the top-1 ``meta.label_set_metric`` ranks by

    @classmethod
    def from_sums(cls, top1: float, top5: float, loss_sum: float, count: int, per_class: dict[str, np.ndarray],
                  **fields) -> EvalResult:  # fmt: skip
        """The metrics of ``count`` videos from their sums (hits at 1 and at 5, the loss) and their
        per-class scores (:func:`class_scores`), whose means over the classes with videos are the
        macro precision / recall / F1 (mean-class accuracy: the macro recall); ``fields``: the
        others (``confusion`` defaults to None)."""
        macro, videos = macro_means(per_class), max(count, 1)
        return cls(top1=top1 / videos, top5=top5 / videos, mean_class_accuracy=macro["recall"], loss=loss_sum / videos,
                   count=count, confusion=fields.pop("confusion", None), macro_precision=macro["precision"],
                   macro_recall=macro["recall"], macro_f1=macro["f1"], per_class=per_class, **fields)  # fmt: skip

    @property
    def score(self) -> float:
        """The metric that ranks epochs and heads: mAP for multi-label runs, the chosen top-1 (a
        set's, or the sets' mean) for label-set runs, else top-1."""
        if self.selected is not None:
            return self.selected
        return self.mean_ap if self.mean_ap is not None else self.top1

    def describe(self) -> str:
        """One phrase for the log: ``top-1 81.20%, top-5 95.00%, mean class 80.10%[, mAP 40.00%]``;
        a label-set run's sets one by one (``verb: top-1 ..., recall@5 ...; noun: ...``)."""
        if self.label_sets is not None:
            return "; ".join(f"{name}: top-1 {100 * result.top1:.2f}%, top-5 {100 * result.top5:.2f}%, "
                             f"recall@5 {100 * (result.class_recall5 or 0):.2f}%"
                             for name, result in self.label_sets.items())  # fmt: skip
        text = f"top-1 {100 * self.top1:.2f}%, top-5 {100 * self.top5:.2f}%"
        text += f", mean class {100 * self.mean_class_accuracy:.2f}%"
        return text + (f", mAP {100 * self.mean_ap:.2f}%" if self.mean_ap is not None else "")

    def as_dict(self) -> dict[str, float]:
        """Scalars for logs."""
        out = {
            "val_top1": self.top1,
            "val_top5": self.top5,
            "val_mean_class_acc": self.mean_class_accuracy,
            "val_loss": self.loss,
            "val_count": self.count,
            "val_macro_precision": self.macro_precision,
            "val_macro_recall": self.macro_recall,
            "val_macro_f1": self.macro_f1,
        }
        if self.mean_ap is not None:
            out["val_map"] = self.mean_ap
        if self.class_recall5 is not None:
            out["val_recall5"] = self.class_recall5
        for name, result in (self.label_sets or {}).items():
            values = (result.top1, result.top5, result.class_recall5, result.mean_class_accuracy, result.loss)
            out |= {f"val_{metric}_{name}": value for metric, value in zip(SET_METRICS, values)}
        if self.head_top1 is not None:
            out |= {f"val_top1_h{i}": value for i, value in enumerate(self.head_top1)} | {"best_head": self.best_head}
        return out


def per_class_scores(confusion: torch.Tensor) -> dict[str, np.ndarray]:
    """Per class of a ``[C, C]`` confusion matrix (rows true, columns predicted): ``support``
    (videos of the class), ``precision`` (right among those predicted as it), ``recall`` (right
    among its videos) and ``f1``; a ratio with nothing to divide by is 0."""
    counts = np.asarray(confusion.tolist(), dtype=np.float64)
    return class_scores(np.diag(counts), counts.sum(0), counts.sum(1))


def class_scores(right: np.ndarray, predicted: np.ndarray, support: np.ndarray) -> dict[str, np.ndarray]:
    """Per class, from its right predictions, its predictions and its videos (``support``):
    ``support``, ``precision``, ``recall`` and ``f1``; a ratio with nothing to divide by is 0."""
    right, predicted, support = (np.asarray(a, dtype=np.float64) for a in (right, predicted, support))
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, right / predicted, 0.0)
        recall = np.where(support > 0, right / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return {"support": support.astype(np.int64), "precision": precision, "recall": recall, "f1": f1}


def macro_means(scores: dict[str, np.ndarray], keys: tuple[str, ...] = ("precision", "recall", "f1")) -> dict:
    """Each of ``keys`` averaged over the classes with videos (0 when none has any)."""
    present = scores["support"] > 0
    return {key: float(scores[key][present].mean()) if present.any() else 0.0 for key in keys}


class EvalAccumulator:
    """Sums over batches on this rank; :meth:`result` adds up all ranks with one all-reduce."""

    def __init__(self, num_classes: int, device: torch.device, top_predictions: int = 5) -> None:
        self.num_classes = num_classes
        self.k = min(top_predictions, num_classes)
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
        self.sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, top-5 hits, count
        self.rows: list[tuple[str, int, list[int], list[float]]] = []

    @torch.no_grad()
    def add(self, logits: torch.Tensor, labels: torch.Tensor, videos: list[str]) -> None:
        """Record one batch of fp32 logits ``[B, num_classes]`` and labels ``[B]``."""
        loss = torch.nn.functional.cross_entropy(logits.float(), labels, reduction="sum")
        (top5,) = topk_correct(logits, labels, (5,))
        self.sums += torch.stack([loss.double(), top5.double(), torch.tensor(len(labels), device=loss.device)])
        flat = labels * self.num_classes + logits.argmax(-1)
        self.confusion += torch.bincount(flat, minlength=self.num_classes**2).view(self.num_classes, -1)
        scores, classes = logits.float().softmax(-1).topk(self.k, dim=-1)
        for video, label, top, score in zip(videos, labels.tolist(), classes.tolist(), scores.tolist()):
            self.rows.append((video, label, top, score))

    def result(self, all_reduce) -> EvalResult:
        """Metrics over all ranks; ``all_reduce(tensor)`` sums a tensor in place across ranks."""
        all_reduce(self.confusion)
        all_reduce(self.sums)
        confusion = self.confusion.cpu()
        loss_sum, top5, count = self.sums.tolist()
        top1 = confusion.diagonal().sum().item()
        return EvalResult.from_sums(top1, top5, loss_sum, int(count), per_class_scores(confusion), confusion=confusion)


class RunningSums:
    """On-device sums of loss, top-1/top-5 hits and samples over a stretch of steps.

    Read with one host sync (per log row or epoch), not per step; saved in checkpoints so that a
    resumed run's log rows and epoch averages equal an uninterrupted run's.
    """

    def __init__(self, device: torch.device, heads: int = 1, best_head: bool = False) -> None:
        self.device = device
        self.heads = heads if heads > 1 else 0
        self.best_head = best_head  # acc1 is the best head's top-1 (V-JEPA 2's), not the heads' mean
        self.reset()

    def reset(self) -> None:
        """Start a new stretch."""
        # loss, top-1, top-5, count, then per head (multi-head runs): loss, top-1
        self.sums = torch.zeros(4 + 2 * self.heads, dtype=torch.float64, device=self.device)
        self.norm = None
        self.data_time = self.step_time = 0.0
        self.steps = 0

    def add(
        self,
        loss_sum: torch.Tensor,
        hits: torch.Tensor,
        count: int,
        norm,
        data_time: float,
        step_time: float,
        head_sums: torch.Tensor | None = None,
    ):
        """Add one optimizer step (tensors stay on the device); ``head_sums`` is ``[heads, 2]``
        (loss sum, top-1 hits per head) in multi-head runs."""
        self.sums[0] += loss_sum
        self.sums[1:3] += hits
        self.sums[3] += count
        if self.heads and head_sums is not None:
            self.sums[4:] += head_sums.flatten()
        self.norm = norm
        self.data_time += data_time
        self.step_time += step_time
        self.steps += 1

    def means(self, all_reduce=None) -> dict[str, float]:
        """Mean loss and accuracies (one host sync); over all ranks when given ``all_reduce``.
        With ``best_head``, ``acc1`` is the best head's top-1."""
        sums = all_reduce(self.sums.clone()) if all_reduce is not None else self.sums
        loss_sum, top1, top5, count, *per_head = sums.tolist()
        if not count:  # every step of the stretch was skipped (non-finite loss)
            return {"loss": None, "acc1": None, "acc5": None, "count": 0}
        out = {"loss": loss_sum / count, "acc1": top1 / count, "acc5": top5 / count, "count": int(count)}
        for head in range(self.heads):
            out[f"loss_h{head}"] = per_head[2 * head] / count
            out[f"acc1_h{head}"] = per_head[2 * head + 1] / count
        if self.best_head and self.heads:
            out["acc1"] = max(out[f"acc1_h{head}"] for head in range(self.heads))
        return out

    def state_dict(self) -> dict:
        """Plain values for a checkpoint."""
        return {
            "sums": self.sums.tolist(),
            "norm": float(self.norm) if self.norm is not None else None,
            "times": [self.data_time, self.step_time, self.steps],
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        self.sums = torch.tensor(state["sums"], dtype=torch.float64, device=self.device)
        self.norm = state["norm"]
        self.data_time, self.step_time, self.steps = state["times"]
