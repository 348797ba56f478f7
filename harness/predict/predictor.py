"""The work behind ``python -m harness.predict`` (:mod:`harness.predict.cli`): inputs to clip units,
batched predictions, per-video and per-window rows, CSV / JSON Lines output."""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from harness.core.progress import progress as progress_bar
from harness.data import units as units_module
from harness.data.decode import DecodeError
from harness.data.transforms import normalize_clips
from harness.data.units import (  # noqa: F401  (LISTING_SUFFIXES, MEDIA: re-exported, their old home)
    LISTING_SUFFIXES,
    MEDIA,
    FrameRates,
    ShardUnits,
    Unit,
    VideoUnits,
    collate_units,
    collect_inputs,
)
from harness.data.workers import die_with_parent
from harness.export.model_io import Preprocessing, load_classifier
from harness.models.attention_maps import forward_with_attention
from harness.predict.explain import Explainer, check_explainable
from harness.training.label_sets import LabelSets

log = logging.getLogger("harness.predict")


@dataclass
class Row:
    """One output row: the top classes of a unit (or its error)."""

    order: tuple
    video: str
    window: str = ""
    start_s: float | None = None
    end_s: float | None = None
    top: list[tuple[int, float]] = field(default_factory=list)
    error: str = ""
    probs: np.ndarray | None = None
    labels: list[int] | None = None  #: multi-label models: the classes scoring at least the threshold
    #: label-set models: per set, its name and its top classes (id within the set, name, probability)
    sets: list[tuple[str, list[tuple[int, str, float]]]] | None = None
    attention: list[float] | None = None  #: ``--explain``: the probe's attention mass per time step
    attention_frames: list[tuple[int, int]] | None = None  #: ``--explain``: first and last frame of each step


def window_units(index: int, video: str, window_s: float, stride_s: float) -> list[Unit] | Row:
    """:func:`harness.data.units.window_units`, or an error row when the video cannot be opened."""
    try:
        return units_module.window_units(index, video, window_s, stride_s)
    except (DecodeError, OSError) as error:
        return Row((index,), video, "all", error=str(error))


@torch.no_grad()
def predict_units(model: torch.nn.Module, loader: DataLoader, preprocessing: Preprocessing, device: torch.device,
                  dtype: torch.dtype, top_k: int, progress: bool, total: int | None = None,
                  threshold: float = 0.5, explainer: Explainer | None = None) -> list[Row]:  # fmt: skip
    """Rows for every unit the loader yields (a multi-label model's rows list the classes whose
    sigmoid reaches ``threshold``; a label-set model's rows each set's top classes); with an
    ``explainer``, their attention (curve and pictures)."""
    rows: list[Row] = []
    k = min(top_k, len(preprocessing.class_names))
    sets = SetNames.of(preprocessing)
    bar = progress_bar(total=total, desc="predict", unit="video", enabled=progress)
    for units, batch, failed in loader:
        for unit, error in failed:
            log.warning("cannot predict %s: %s", unit.video, error)
            rows.append(Row(unit.order, unit.video, _window_name(unit), *_seconds(unit), error=error))
        if batch is not None:
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                clips = normalize_clips(batch.clips.to(device), preprocessing.mean, preprocessing.std)
                if explainer is None:
                    logits = model(clips, batch.clip_indices.to(device), preprocessing.num_views)
                else:
                    logits, maps = forward_with_attention(model, clips, batch.clip_indices.to(device),
                                                          preprocessing.num_views)  # fmt: skip
            if sets is not None:  # a softmax per set, over its own slice
                probs = sets.layout.probabilities(logits)
            else:
                probs = logits.float().sigmoid() if preprocessing.multi_label else logits.float().softmax(-1)
            probs = probs.cpu()
            values, classes = probs.topk(k, dim=-1)
            first = len(rows)
            for unit, p, v, c in zip(units, probs.numpy(), values.tolist(), classes.tolist()):
                row = Row(unit.order, unit.video, _window_name(unit), *_seconds(unit), list(zip(c, v)), probs=p)
                row.labels = above(p, threshold) if preprocessing.multi_label else None
                if sets is not None:  # (the softmax over every set's classes at once means nothing)
                    row.top, row.sets = [], sets.top(torch.from_numpy(p), top_k)
                rows.append(row)
            if explainer is not None:
                explainer.explain(
                    rows[first:], batch.clips, batch.clip_indices, maps
                )  # (the views: in the maps' shape)
        bar.update(len(units) + len(failed))
    bar.close()
    return rows


def _window_name(unit: Unit) -> str:
    return str(unit.order[1]) if unit.frames is not None else ""


def _seconds(unit: Unit) -> tuple[float | None, float | None]:
    return unit.seconds if unit.seconds is not None else (None, None)


def above(probs: np.ndarray, threshold: float) -> list[int]:
    """Classes whose probability reaches ``threshold``, most probable first."""
    return [int(c) for c in np.argsort(-probs, kind="stable") if probs[c] >= threshold]


def video_aggregates(rows: list[Row], top_k: int, threshold: float | None = None,
                     sets: SetNames | None = None) -> list[Row]:  # fmt: skip
    """One ``window=all`` row per windowed video: the mean of its windows' probabilities (a
    label-set model's: each set's top classes of the mean)."""
    by_video: dict[int, list[Row]] = {}
    for row in rows:
        if row.window not in ("", "all") and row.probs is not None:
            by_video.setdefault(row.order[0], []).append(row)
    out = []
    for index, windows in by_video.items():
        mean = torch.from_numpy(np.mean([w.probs for w in windows], axis=0))
        values, classes = mean.topk(min(top_k, len(mean)))
        out.append(Row((index, math.inf), windows[0].video, "all", windows[0].start_s, max(w.end_s for w in windows),
                       list(zip(classes.tolist(), values.tolist())) if sets is None else [],
                       labels=above(mean.numpy(), threshold) if threshold is not None else None,
                       sets=sets.top(mean, top_k) if sets is not None else None))  # fmt: skip
    return out


@dataclass
class SetNames:
    """A label-set model's sets (:class:`~harness.training.label_sets.LabelSets`) and each set's
    class names, from its preprocessing."""

    layout: LabelSets
    names: list[list[str]]

    @classmethod
    def of(cls, preprocessing: Preprocessing) -> SetNames | None:
        """The sets of a label-set model, else None."""
        if not preprocessing.label_sets:
            return None
        layout = LabelSets.from_dict(preprocessing.label_sets)
        return cls(layout, layout.split_names(preprocessing.class_names))

    def top(self, probabilities: torch.Tensor, k: int) -> list[tuple[str, list[tuple[int, str, float]]]]:
        """Each set's ``k`` most probable classes of one unit's ``[total]`` probabilities, named."""
        tops = self.layout.top(probabilities, k)
        return [(name, [(c, names[c], p) for c, p in top])
                for name, names, top in zip(self.layout.names, self.names, tops)]  # fmt: skip


def write_rows(rows: list[Row], path: Path, names: list[str], top_k: int, windows: bool) -> None:
    """CSV (``video[,window,start_s,end_s],pred1,name1,prob1,...[,labels][,attention_over_time,
    attention_frames],error``) or JSON Lines by suffix; ``labels`` (names joined by ``;``) for a
    multi-label model's rows; a label-set model's rows give each set's top classes instead
    (``verb_pred1,verb_name1,verb_prob1,...,noun_pred1,...``; in JSON Lines ``top`` maps each set to
    its list); with ``--explain`` the attention mass per time step (joined by ``;``) and the first
    and last frame of each step (``0-3;6-9``; in JSON Lines, lists)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    multi = any(row.labels is not None for row in rows)
    explained = any(row.attention is not None for row in rows)
    # a label-set model's sets and the classes listed of each (from a row that was predicted)
    layout = next(([(name, len(top)) for name, top in row.sets] for row in rows if row.sets), None)
    if path.suffix in (".jsonl", ".json"):
        with open(path, "w", encoding="utf-8") as handle:
            for row in rows:
                record: dict[str, Any] = {"video": row.video}
                if windows:
                    record |= {"window": row.window, "start_s": row.start_s, "end_s": row.end_s}
                record["top"] = [{"class": c, "name": names[c], "prob": round(p, 6)} for c, p in row.top]
                if layout:  # a label-set model: each set's top classes
                    record["top"] = {name: [{"class": c, "name": n, "prob": round(p, 6)} for c, n, p in top]
                                     for name, top in row.sets or []}  # fmt: skip
                if multi:
                    record["labels"] = [names[c] for c in row.labels or []]
                if explained:
                    record["attention_over_time"] = row.attention
                    record["attention_frames"] = [list(span) for span in row.attention_frames or []] or None
                record["error"] = row.error or None
                handle.write(json.dumps(record) + "\n")
        return
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        head = ["video", *(["window", "start_s", "end_s"] if windows else [])]
        top = [f"{c}{i + 1}" for i in range(top_k) for c in ("pred", "name", "prob")]
        if layout:  # verb_pred1, verb_name1, verb_prob1, ..., noun_pred1...
            top = [f"{name}_{c}{i + 1}" for name, k in layout for i in range(k) for c in ("pred", "name", "prob")]
        curve = ["attention_over_time", "attention_frames"] if explained else []
        writer.writerow([*head, *top, *(["labels"] if multi else []), *curve, "error"])
        for row in rows:
            where = [row.window, _round(row.start_s), _round(row.end_s)] if windows else []
            cells = [v for c, p in row.top for v in (c, names[c], f"{p:.6f}")]
            if layout:
                cells = [v for _, top in row.sets or [] for c, n, p in top for v in (c, n, f"{p:.6f}")]
            labels = [";".join(names[c] for c in row.labels or [])] if multi else []
            curve = [";".join(f"{v:.6f}" for v in row.attention or []),
                     ";".join(f"{a}-{b}" for a, b in row.attention_frames or [])] if explained else []  # fmt: skip
            blank = [""] * (len(top) - len(cells))  # (an error row's)
            writer.writerow([row.video, *where, *cells, *blank, *labels, *curve, row.error])


def _round(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def build_units(videos: list[str], args: argparse.Namespace, probed: units_module.Probed | None = None,
                frame_rates: FrameRates | None = None) -> tuple[list[Unit], list[Row]]:  # fmt: skip
    """Units of this job (whole videos, or windows; ``probed``: the videos' lengths, see
    :func:`harness.data.units.build_units`) and the rows of videos that failed already."""
    units, failed = units_module.build_units(videos, args.window_seconds, args.stride_seconds, args.progress, probed,
                                             frame_rates or args.frame_fps)  # fmt: skip
    return units, [Row(unit.order, unit.video, "all", error=error) for unit, error in failed]


def run(args: argparse.Namespace) -> tuple[list[Row], list[str]]:
    """Predict every input on this process's share; returns all rows (on rank 0) and class names."""
    from harness.parallel.build import build_strategy

    strategy = build_strategy("auto", args.device, "float32", "auto")
    device, dtype = strategy.device, getattr(torch, args.dtype)
    model, preprocessing = load_classifier(args.model, args.weights)
    explain = getattr(args, "explain", None)
    if explain is not None:  # before any video is read
        check_explainable(model, args.model)
    overrides = {key: getattr(args, key) for key in ("num_clips", "num_views", "frame_step", "fps", "duration")}
    preprocessing = preprocessing.with_sampling(**overrides)
    names = preprocessing.class_names
    model = model.to(device).eval()
    rates: dict[str, float] = {}
    videos, shards = collect_inputs(args.inputs, args.frame_folders, rates)
    frame_rates = FrameRates(args.frame_fps, rates)  # a listing line's fps, else --frame-fps
    rank, world = strategy.rank, strategy.world_size
    probed = None
    if args.window_seconds:  # each rank opens its share of the videos to count their windows
        share = range(rank, len(videos), world)
        shown = args.progress and strategy.is_main
        probed = units_module.merge_probes(strategy.gather_objects(
            units_module.probe_lengths(videos, share, shown, frame_rates)))  # fmt: skip
    units, failed = build_units(videos, args, probed, frame_rates)
    # A video's units stay on one rank (its windows too: its window=all row averages them all), and
    # so does its error row.
    mine = [unit for unit in units if unit.order[0] % world == rank]
    rows = [row for row in failed if row.order[0] % world == rank]
    options = {"batch_size": args.batch_size, "num_workers": args.workers, "collate_fn": collate_units,
               "worker_init_fn": die_with_parent if args.workers else None}  # fmt: skip
    loader = DataLoader(VideoUnits(mine, preprocessing, args.decoder, frame_rates), **options)
    progress = args.progress and strategy.is_main
    explainer = Explainer(explain, args.explain_format, videos) if explain is not None else None
    rows += predict_units(model, loader, preprocessing, device, dtype, args.top_k, progress, len(mine), args.threshold,
                          explainer)  # fmt: skip
    if shards:
        ordered = [((len(videos) + number,), shard) for number, shard in enumerate(shards)][rank::world]
        loader = DataLoader(ShardUnits(ordered, preprocessing, args.decoder), **options)
        samples = sum(s.samples or 0 for _, s in ordered) or None
        rows += predict_units(model, loader, preprocessing, device, dtype, args.top_k, progress, samples,
                              args.threshold, explainer)  # fmt: skip
    rows += video_aggregates(rows, args.top_k, args.threshold if preprocessing.multi_label else None,
                             SetNames.of(preprocessing))  # fmt: skip
    for row in rows:
        row.probs = None  # only the aggregates needed them; keep the gather small
    gathered = [row for part in strategy.gather_to_main(rows) for row in part]
    strategy.close()
    return (sorted(gathered, key=lambda row: row.order) if strategy.is_main else []), names
