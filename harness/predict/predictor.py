"""The work behind ``python -m harness.predict`` (:mod:`harness.predict.cli`): inputs to clip units,
batched predictions, per-video and per-window rows, CSV / JSON Lines output."""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from harness.core.errors import UserError
from harness.core.progress import progress as progress_bar
from harness.data.decode import IMAGE_EXTENSIONS, DecodeError, open_video
from harness.data.files import ClipItem, load_clips
from harness.data.listing import read_listing
from harness.data.loader import collate_clips
from harness.data.shard_io import VIDEO_EXTENSIONS, Shard, decode_sample, list_shards, read_samples
from harness.data.transforms import normalize_clips
from harness.data.workers import die_with_parent
from harness.export.model_io import Preprocessing, load_classifier
from harness.models.attention_maps import forward_with_attention
from harness.predict.explain import Explainer, check_explainable

log = logging.getLogger("harness.predict")
LISTING_SUFFIXES = (".csv", ".txt", ".npy")
MEDIA = VIDEO_EXTENSIONS + IMAGE_EXTENSIONS  #: what a folder given as input is searched for


@dataclass
class Unit:
    """One thing to predict: a video, or a window ``[start, end)`` (frames) of one."""

    order: tuple
    video: str
    frames: tuple[int, int] | None = None
    seconds: tuple[float, float] | None = None


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
    attention: list[float] | None = None  #: ``--explain``: the probe's attention mass per time step
    attention_frames: list[tuple[int, int]] | None = None  #: ``--explain``: first and last frame of each step


def collect_inputs(inputs: list[str]) -> tuple[list[str], list[Shard]]:
    """Video and image paths (files, folders searched recursively, listings) and shards (manifests), in order."""
    videos: list[str] = []
    shards: list[Shard] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower().lstrip(".") in MEDIA)
            if not found:
                raise UserError(f"{path}: no video or image files ({', '.join(MEDIA)}) in it or below it")
            videos += [str(p) for p in found]
        elif path.suffix == ".json":
            shards += list_shards(str(path))
        elif path.suffix.lower() in LISTING_SUFFIXES:
            videos += list(read_listing(path).paths())
        elif path.is_file():
            videos.append(str(path))
        else:
            raise UserError(f"input not found: {path}")
    return videos, shards


def window_units(index: int, video: str, window_s: float, stride_s: float) -> list[Unit] | Row:
    """Windows of ``window_s`` seconds every ``stride_s`` seconds covering the video (the last one
    ends at the video's end), or an error row when the video cannot be opened."""
    try:
        reader = open_video(video)
        frames, fps = reader.num_frames, reader.fps or 30.0
        reader.close()
    except (DecodeError, OSError) as error:
        return Row((index,), video, "all", error=str(error))
    length, stride = max(1, round(window_s * fps)), max(1, round(stride_s * fps))
    starts = list(range(0, max(1, frames - length + 1), stride))
    if starts[-1] + length < frames:
        starts.append(frames - length)
    units = []
    for number, start in enumerate(starts):
        end = min(frames, start + length)  # times to the millisecond
        units.append(Unit((index, number), video, (start, end), (round(start / fps, 3), round(end / fps, 3))))
    return units


class VideoUnits(Dataset):
    """``(unit, clips or error message)`` of each unit: a video that cannot be used is reported."""

    def __init__(self, units: list[Unit], preprocessing: Preprocessing, decoder: str) -> None:
        self.units, self.spec, self.decoder = units, preprocessing.clip_spec(), decoder
        self.transform, self.num_clips = preprocessing.transform(), preprocessing.num_clips

    def __len__(self) -> int:
        return len(self.units)

    def __getitem__(self, index: int) -> tuple[Unit, ClipItem | str]:
        unit = self.units[index]
        try:
            clips, indices = load_clips(unit.video, self.spec, self.num_clips, self.transform, random=False,
                                        allow_clip_overlap=False, rng=np.random.default_rng(0), decoder=self.decoder,
                                        frame_range=unit.frames)  # fmt: skip
        except (DecodeError, OSError) as error:
            return unit, str(error)
        return unit, ClipItem(clips, 0, indices, unit.video)


class ShardUnits(IterableDataset):
    """``(unit, clips or error message)`` of every sample of the shards (a worker reads whole shards)."""

    def __init__(self, shards: list[tuple[tuple, Shard]], preprocessing: Preprocessing, decoder: str) -> None:
        self.shards, self.preprocessing, self.decoder = shards, preprocessing, decoder

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        p = self.preprocessing
        spec, transform = p.clip_spec(), p.transform()
        for order, shard in self.shards[worker::workers]:
            number = 0
            try:
                for number, (key, parts) in enumerate(read_samples(shard.url, sha256=shard.sha256)):
                    unit = Unit((*order, number), f"{shard.url}#{key}")
                    try:
                        item = decode_sample(shard.url, key, parts, spec, p.num_clips, transform, False,
                                             np.random.default_rng(0), self.decoder)  # fmt: skip
                    except (DecodeError, OSError) as error:
                        yield unit, str(error)
                    else:
                        yield unit, ClipItem(item.clips, 0, item.clip_indices, unit.video)
            except (tarfile.TarError, OSError, EOFError) as error:  # the shard's remaining samples are lost
                yield Unit((*order, number + 1), shard.url), f"unreadable shard: {error}"


def collate_units(items: list[tuple[Unit, ClipItem | str]]) -> tuple[list[Unit], Any, list[tuple[Unit, str]]]:
    """A batch: the decoded units, their clips (:class:`ClipBatch` or None) and the failures."""
    decoded = [(unit, item) for unit, item in items if isinstance(item, ClipItem)]
    failed = [(unit, item) for unit, item in items if isinstance(item, str)]
    return [unit for unit, _ in decoded], collate_clips([item for _, item in decoded]) if decoded else None, failed


@torch.no_grad()
def predict_units(model: torch.nn.Module, loader: DataLoader, preprocessing: Preprocessing, device: torch.device,
                  dtype: torch.dtype, top_k: int, progress: bool, total: int | None = None,
                  threshold: float = 0.5, explainer: Explainer | None = None) -> list[Row]:  # fmt: skip
    """Rows for every unit the loader yields (a multi-label model's rows list the classes whose
    sigmoid reaches ``threshold``); with an ``explainer``, their attention (curve and pictures)."""
    rows: list[Row] = []
    k = min(top_k, len(preprocessing.class_names))
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
            probs = logits.float().sigmoid() if preprocessing.multi_label else logits.float().softmax(-1)
            probs = probs.cpu()
            values, classes = probs.topk(k, dim=-1)
            first = len(rows)
            for unit, p, v, c in zip(units, probs.numpy(), values.tolist(), classes.tolist()):
                row = Row(unit.order, unit.video, _window_name(unit), *_seconds(unit), list(zip(c, v)), probs=p)
                row.labels = above(p, threshold) if preprocessing.multi_label else None
                rows.append(row)
            if explainer is not None:
                explainer.explain(rows[first:], batch.clips, batch.clip_indices, maps, preprocessing.num_views)
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


def video_aggregates(rows: list[Row], top_k: int, threshold: float | None = None) -> list[Row]:
    """One ``window=all`` row per windowed video: the mean of its windows' probabilities."""
    by_video: dict[int, list[Row]] = {}
    for row in rows:
        if row.window not in ("", "all") and row.probs is not None:
            by_video.setdefault(row.order[0], []).append(row)
    out = []
    for index, windows in by_video.items():
        mean = torch.from_numpy(np.mean([w.probs for w in windows], axis=0))
        values, classes = mean.topk(min(top_k, len(mean)))
        out.append(Row((index, math.inf), windows[0].video, "all", windows[0].start_s, max(w.end_s for w in windows),
                       list(zip(classes.tolist(), values.tolist())),
                       labels=above(mean.numpy(), threshold) if threshold is not None else None))  # fmt: skip
    return out


def write_rows(rows: list[Row], path: Path, names: list[str], top_k: int, windows: bool) -> None:
    """CSV (``video[,window,start_s,end_s],pred1,name1,prob1,...[,labels][,attention_over_time,
    attention_frames],error``) or JSON Lines by suffix; ``labels`` (names joined by ``;``) for a
    multi-label model's rows; with ``--explain`` the attention mass per time step (joined by ``;``)
    and the first and last frame of each step (``0-3;6-9``; in JSON Lines, lists)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    multi = any(row.labels is not None for row in rows)
    explained = any(row.attention is not None for row in rows)
    if path.suffix in (".jsonl", ".json"):
        with open(path, "w", encoding="utf-8") as handle:
            for row in rows:
                record: dict[str, Any] = {"video": row.video}
                if windows:
                    record |= {"window": row.window, "start_s": row.start_s, "end_s": row.end_s}
                record["top"] = [{"class": c, "name": names[c], "prob": round(p, 6)} for c, p in row.top]
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
        curve = ["attention_over_time", "attention_frames"] if explained else []
        writer.writerow([*head, *top, *(["labels"] if multi else []), *curve, "error"])
        for row in rows:
            where = [row.window, _round(row.start_s), _round(row.end_s)] if windows else []
            cells = [v for c, p in row.top for v in (c, names[c], f"{p:.6f}")]
            labels = [";".join(names[c] for c in row.labels or [])] if multi else []
            curve = [";".join(f"{v:.6f}" for v in row.attention or []),
                     ";".join(f"{a}-{b}" for a, b in row.attention_frames or [])] if explained else []  # fmt: skip
            writer.writerow([row.video, *where, *cells, *[""] * (3 * top_k - len(cells)), *labels, *curve, row.error])


def _round(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def build_units(videos: list[str], args: argparse.Namespace) -> tuple[list[Unit], list[Row]]:
    """Units of this job (whole videos, or windows) and the rows of videos that failed already."""
    if not args.window_seconds:
        return [Unit((index,), video) for index, video in enumerate(videos)], []
    units, failed = [], []
    for index, video in enumerate(progress_bar(videos, desc="probe", unit="video", enabled=args.progress)):
        found = window_units(index, video, args.window_seconds, args.stride_seconds or args.window_seconds)
        (failed.append(found) if isinstance(found, Row) else units.extend(found))
    return units, failed


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
    videos, shards = collect_inputs(args.inputs)
    units, rows = build_units(videos, args)
    rank, world = strategy.rank, strategy.world_size
    options = {"batch_size": args.batch_size, "num_workers": args.workers, "collate_fn": collate_units,
               "worker_init_fn": die_with_parent if args.workers else None}  # fmt: skip
    mine = units[rank::world]
    loader = DataLoader(VideoUnits(mine, preprocessing, args.decoder), **options)
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
    rows += video_aggregates(rows, args.top_k, args.threshold if preprocessing.multi_label else None)
    for row in rows:
        row.probs = None  # only the aggregates needed them; keep the gather small
    gathered = [row for part in strategy.gather_to_main(rows) for row in part]
    strategy.close()
    return (sorted(gathered, key=lambda row: row.order) if strategy.is_main else []), names
