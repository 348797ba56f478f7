"""Deterministic multi-view evaluation, exact across ranks, and its artefacts."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import torch
from torch import nn

from harness.core.progress import progress as progress_bar
from harness.data.loader import ClipBatch, ClipLoader
from harness.data.transforms import normalize_clips
from harness.parallel.strategy import Strategy
from harness.training.confusion import write_confusion, write_per_class, write_predictions, write_set_predictions
from harness.training.metrics import EvalAccumulator, EvalResult
from harness.training.objective import Objective


def to_model_input(clips: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move a clip batch to ``device``; ``uint8`` clips are normalised there (on-device mode)."""
    clips = clips.to(device, non_blocking=True)
    return normalize_clips(clips) if clips.dtype == torch.uint8 else clips


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: ClipLoader,
    strategy: Strategy,
    num_classes: int,
    progress: bool = False,
    description: str = "eval",
    num_views: int = 1,
    objective: Objective | None = None,
    observe: Callable[[ClipBatch, torch.Tensor], None] | None = None,
) -> tuple[EvalResult, EvalAccumulator]:
    """Every validation video once over all ranks: ``val_num_clips x num_views`` views per video,
    combined by the model's clip aggregation, scored by ``objective`` (default: single-label);
    ``observe(batch, logits)`` is called after each of this rank's forward passes.
    Returns the metrics and this rank's accumulator (its prediction rows)."""
    was_training = model.training
    model.eval()
    # One accumulator per probe head, made before the loop: every rank takes part in every
    # all-reduce, even one that got no batch.
    heads = getattr(strategy.unwrap(model).classifier, "heads", None)
    objective = objective or Objective(num_classes)
    accumulators = [objective.accumulator(strategy.device, strategy.rank, strategy.world_size)
                    for _ in range(len(heads) if heads else 1)]  # fmt: skip
    loader.set_epoch(0)
    batches = progress_bar(loader, desc=description, unit="batch", enabled=progress, leave=False)
    for batch in lockstep(batches, strategy, model, num_views) if strategy.shards_parameters else batches:
        if batch is None:  # every video of the batch was unusable (counted by the dataset)
            continue
        with strategy.precision.autocast():
            indices = batch.clip_indices.to(strategy.device)
            logits = model(to_model_input(batch.clips, strategy.device), indices, num_views)
        if observe is not None:
            observe(batch, logits)
        per_head = logits.unbind(1) if logits.dim() == 3 else [logits]  # [B, heads, C]: one per head
        labels = batch.labels.to(strategy.device)
        for accumulator, head_logits in zip(accumulators, per_head):
            accumulator.add(head_logits.float(), labels, batch.videos)
    model.train(was_training)
    results = [accumulator.result(strategy.all_reduce_sum) for accumulator in accumulators]
    if len(results) == 1:
        return results[0], accumulators[0]
    best = max(range(len(results)), key=lambda i: (results[i].score, -i))
    results[best].head_top1 = [result.score for result in results]
    results[best].best_head = best
    return results[best], accumulators[best]


_END = object()


def lockstep(batches: Iterable, strategy: Strategy, model: nn.Module, num_views: int) -> Iterator:
    """``batches``, with every rank taking part in every forward pass: under FSDP2 / ZeRO-3 a
    forward gathers parameters from all ranks, so a rank whose share of the validation set ran out
    (shards split unevenly) or whose batch had only unreadable videos runs a discarded forward on a
    blank clip while another rank has a batch. Costs one small all-reduce per batch."""
    iterator, finished = iter(batches), False
    while True:
        item = _END if finished else next(iterator, _END)
        finished = item is _END
        real = not finished and item is not None
        shape = [float(v) for v in item.clips.shape[1:]] if real else [0.0] * 5  # [K, C, T, H, W]
        # summed over ranks: [ranks not finished, ranks with a batch, their clip shapes]
        state = torch.tensor([float(not finished), float(real), *shape], device=strategy.device)
        not_finished, with_batch, *shapes = strategy.all_reduce_sum(state).tolist()  # one host sync
        if not_finished == 0:
            return
        if real:
            yield item
            continue
        if with_batch:  # the others forward this round: so does this rank, on a blank clip
            blank = torch.zeros(1, *[int(v) // int(with_batch) for v in shapes], dtype=torch.uint8)
            indices = torch.zeros(1, blank.shape[1], blank.shape[3], dtype=torch.long, device=strategy.device)
            with torch.no_grad(), strategy.precision.autocast():
                model(to_model_input(blank, strategy.device), indices, num_views)


def write_eval_artefacts(
    result: EvalResult, accumulator: EvalAccumulator, strategy: Strategy, folder: Path, prefix: str, names: list[str]
) -> tuple[list[Path], list]:
    """Predictions (top-5 with scores and class ``names``), per-class scores and the confusion
    matrix (CSV + PNG; single-label runs) from all ranks, written by the main rank as
    ``<prefix>predictions.csv`` etc. (a label-set run's: :func:`write_set_artefacts`); returns the
    paths written and the gathered prediction rows (empty on other ranks, and for label sets)."""
    rows = [row for rank_rows in strategy.gather_to_main(accumulator.rows) for row in rank_rows]
    if not strategy.is_main:
        return [], []
    if result.label_sets is not None:  # (the dashboards' tables show one class per video: they get no rows)
        per_set = dict(zip(accumulator.sets.names, accumulator.sets.split_names(names)))
        return write_set_artefacts(result, rows, folder, prefix, per_set), []
    paths = [folder / f"{prefix}predictions.csv", folder / f"{prefix}per_class.csv"]
    write_predictions(rows, paths[0], names)
    write_per_class(result.per_class, paths[1], names)
    if result.confusion is not None:
        paths += [folder / f"{prefix}confusion.csv", folder / f"{prefix}confusion.png"]
        write_confusion(result.confusion, paths[2], paths[3], names)
    return paths, rows


def write_set_artefacts(result: EvalResult, rows: list, folder: Path, prefix: str,
                        names: dict[str, list[str]]) -> list[Path]:  # fmt: skip
    """A label-set run's artefacts: ``<prefix>predictions.csv`` (every set's label and top
    classes) and ``<prefix>per_class_<set>.csv`` per set (support, precision, recall, F1,
    recall@5); no confusion matrix (EPIC-KITCHENS-100's actions are thousands of classes).
    ``names``: each set's class names."""
    paths = [folder / f"{prefix}predictions.csv"]
    write_set_predictions(rows, paths[0], names)
    for name, set_result in result.label_sets.items():
        paths.append(folder / f"{prefix}per_class_{name}.csv")
        write_per_class(set_result.per_class, paths[-1], names[name])
    return paths
