"""Accuracy metrics and the evaluation accumulator (exact across ranks), plus its artefacts."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import torch


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> list[torch.Tensor]:
    """Number of samples whose label is among the top-k logits, per k (tensors, no sync)."""
    k_max = min(max(ks), logits.shape[-1])
    top = logits.topk(k_max, dim=-1).indices
    hits = top == labels[:, None]
    return [hits[:, : min(k, k_max)].any(dim=-1).sum() for k in ks]


@dataclass
class EvalResult:
    """Validation metrics over every usable video of all ranks (each counted once)."""

    top1: float
    top5: float
    mean_class_accuracy: float
    loss: float
    count: int
    confusion: torch.Tensor  #: ``int64 [num_classes, num_classes]``, rows = true label
    head_top1: list[float] | None = None  #: top-1 of every probe head (multi-head runs); the rest is the best's
    best_head: int | None = None  #: index of the head with the best top-1 (multi-head runs)

    def as_dict(self) -> dict[str, float]:
        """Scalars for logs."""
        out = {
            "val_top1": self.top1,
            "val_top5": self.top5,
            "val_mean_class_acc": self.mean_class_accuracy,
            "val_loss": self.loss,
            "val_count": self.count,
        }
        if self.head_top1 is not None:
            out |= {f"val_top1_h{i}": value for i, value in enumerate(self.head_top1)} | {"best_head": self.best_head}
        return out


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
        support = confusion.sum(1)
        correct = confusion.diagonal()
        seen = support > 0
        per_class = (correct[seen].double() / support[seen].double()).mean().item() if seen.any() else 0.0
        count_int = int(count)
        return EvalResult(
            top1=correct.sum().item() / max(count_int, 1),
            top5=top5 / max(count_int, 1),
            mean_class_accuracy=per_class,
            loss=loss_sum / max(count_int, 1),
            count=count_int,
            confusion=confusion,
        )


def write_predictions(rows: list[tuple[str, int, list[int], list[float]]], path: str | Path) -> None:
    """CSV ``video,label,pred1,score1,...`` sorted by video (rows gathered from every rank)."""
    k = max((len(top) for _, _, top, _ in rows), default=0)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["video", "label", *[f"{name}{i + 1}" for i in range(k) for name in ("pred", "score")]])
        for video, label, top, score in sorted(rows, key=lambda row: row[0]):
            writer.writerow([video, label, *[v for pair in zip(top, (f"{s:.6f}" for s in score)) for v in pair]])


def write_confusion(confusion: torch.Tensor, csv_path: str | Path, png_path: str | Path) -> None:
    """Confusion matrix as CSV (rows: true label, columns: predicted) and as a heat-map PNG."""
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["true\\pred", *range(len(confusion))])
        for label, row in enumerate(confusion.tolist()):
            writer.writerow([label, *row])
    confusion_png(confusion, png_path)


def confusion_png(confusion: torch.Tensor, path: str | Path, max_side: int = 1024) -> None:
    """Row-normalised heat map (white = 0, dark blue = the whole row), one square per cell."""
    from PIL import Image  # torchvision's dependency; imported here to keep start-up light

    classes = len(confusion)
    rows = confusion.double()
    rows = rows / rows.sum(1, keepdim=True).clamp(min=1)
    cell = max(1, min(32, max_side // max(classes, 1)))
    shade = (1.0 - rows).clamp(0, 1)
    rgb = torch.stack([shade * 255, shade * 255, 128 + shade * 127], dim=-1).round().to(torch.uint8)
    rgb = rgb.repeat_interleave(cell, 0).repeat_interleave(cell, 1)
    Image.fromarray(rgb.numpy()).save(path)


class RunningSums:
    """On-device sums of loss, top-1/top-5 hits and samples over a stretch of steps.

    Read with one host sync (per log row or epoch), not per step; saved in checkpoints so that a
    resumed run's log rows and epoch averages equal an uninterrupted run's.
    """

    def __init__(self, device: torch.device, heads: int = 1) -> None:
        self.device = device
        self.heads = heads if heads > 1 else 0
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
        """Mean loss and accuracies (one host sync); over all ranks when given ``all_reduce``."""
        sums = all_reduce(self.sums.clone()) if all_reduce is not None else self.sums
        loss_sum, top1, top5, count, *per_head = sums.tolist()
        if not count:  # every step of the stretch was skipped (non-finite loss)
            return {"loss": None, "acc1": None, "acc5": None, "count": 0}
        out = {"loss": loss_sum / count, "acc1": top1 / count, "acc5": top5 / count, "count": int(count)}
        for head in range(self.heads):
            out[f"loss_h{head}"] = per_head[2 * head] / count
            out[f"acc1_h{head}"] = per_head[2 * head + 1] / count
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
