"""Classify new videos: ``python -m harness.predict MODEL INPUT... [--output predictions.csv]``.

``MODEL`` is a run folder (its best checkpoint), a checkpoint folder or pointer, an exported
directory (``harness.export``) or a Hugging Face V-JEPA 2 classifier directory. Each ``INPUT`` is a
video file, a folder (searched recursively for videos), a listing (``.csv``/``.txt``/``.npy``;
labels are ignored) or a shard manifest (``manifest.json``); any mix, in order.

Clips are taken as the model's evaluation took them (frames per clip, frame step or fps, crop
size, clips and views, normalisation: saved with the model; ``--num-clips`` etc. override) and
one prediction per video is made from all its clips and views, as in evaluation. With
``--window-seconds W [--stride-seconds S]`` each window of a long video gets its own prediction
(with its start and end time) and the video a row ``window=all`` averaging the windows'
probabilities. Output: top-k classes with names and probabilities, as CSV or JSON Lines
(``--output``, by suffix), rows in input order; a video that cannot be read gets a row with its
error. The exit status is 2 only when nothing could be predicted. Under ``torchrun`` the ranks
split the inputs and rank 0 writes the merged file.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info
from tqdm import tqdm

from harness.data.decode import DecodeError, open_video
from harness.data.files import ClipItem, load_clips
from harness.data.listing import read_listing
from harness.data.loader import collate_clips
from harness.data.shard_io import VIDEO_EXTENSIONS, Shard, decode_sample, list_shards, read_samples
from harness.data.transforms import normalize_clips
from harness.data.workers import die_with_parent
from harness.errors import RunFailed, UserError, entry_point
from harness.export.cli import add_weights_option
from harness.export.model_io import Preprocessing, load_classifier

log = logging.getLogger("harness.predict")
LISTING_SUFFIXES = (".csv", ".txt", ".npy")


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


def collect_inputs(inputs: list[str]) -> tuple[list[str], list[Shard]]:
    """Video paths (files, folders searched recursively, listings) and shards (manifests), in order."""
    videos: list[str] = []
    shards: list[Shard] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower().lstrip(".") in VIDEO_EXTENSIONS
            )
            if not found:
                raise UserError(f"{path}: no video files ({', '.join(VIDEO_EXTENSIONS)}) in it or below it")
            videos += [str(p) for p in found]
        elif path.suffix == ".json":
            shards += list_shards(str(path))
        elif path.suffix.lower() in LISTING_SUFFIXES:
            videos += [record.path for record in read_listing(path)]
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
                  dtype: torch.dtype, top_k: int, progress: bool, total: int | None = None) -> list[Row]:  # fmt: skip
    """Rows for every unit the loader yields."""
    rows: list[Row] = []
    k = min(top_k, len(preprocessing.class_names))
    bar = tqdm(total=total, desc="predict", unit="video", disable=not progress)
    for units, batch, failed in loader:
        for unit, error in failed:
            log.warning("cannot predict %s: %s", unit.video, error)
            rows.append(Row(unit.order, unit.video, _window_name(unit), *_seconds(unit), error=error))
        if batch is not None:
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                clips = normalize_clips(batch.clips.to(device), preprocessing.mean, preprocessing.std)
                logits = model(clips, batch.clip_indices.to(device), preprocessing.num_views)
            probs = logits.float().softmax(-1).cpu()
            values, classes = probs.topk(k, dim=-1)
            for unit, p, v, c in zip(units, probs.numpy(), values.tolist(), classes.tolist()):
                rows.append(Row(unit.order, unit.video, _window_name(unit), *_seconds(unit), list(zip(c, v)), probs=p))
        bar.update(len(units) + len(failed))
    bar.close()
    return rows


def _window_name(unit: Unit) -> str:
    return str(unit.order[1]) if unit.frames is not None else ""


def _seconds(unit: Unit) -> tuple[float | None, float | None]:
    return unit.seconds if unit.seconds is not None else (None, None)


def video_aggregates(rows: list[Row], top_k: int) -> list[Row]:
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
                       list(zip(classes.tolist(), values.tolist()))))  # fmt: skip
    return out


def write_rows(rows: list[Row], path: Path, names: list[str], top_k: int, windows: bool) -> None:
    """CSV (``video[,window,start_s,end_s],pred1,name1,prob1,...,error``) or JSON Lines by suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in (".jsonl", ".json"):
        with open(path, "w", encoding="utf-8") as handle:
            for row in rows:
                record: dict[str, Any] = {"video": row.video}
                if windows:
                    record |= {"window": row.window, "start_s": row.start_s, "end_s": row.end_s}
                record["top"] = [{"class": c, "name": names[c], "prob": round(p, 6)} for c, p in row.top]
                record["error"] = row.error or None
                handle.write(json.dumps(record) + "\n")
        return
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        head = ["video", *(["window", "start_s", "end_s"] if windows else [])]
        writer.writerow([*head, *[f"{c}{i + 1}" for i in range(top_k) for c in ("pred", "name", "prob")], "error"])
        for row in rows:
            where = [row.window, _round(row.start_s), _round(row.end_s)] if windows else []
            cells = [v for c, p in row.top for v in (c, names[c], f"{p:.6f}")]
            writer.writerow([row.video, *where, *cells, *[""] * (3 * top_k - len(cells)), row.error])


def _round(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def build_units(videos: list[str], args: argparse.Namespace) -> tuple[list[Unit], list[Row]]:
    """Units of this job (whole videos, or windows) and the rows of videos that failed already."""
    if not args.window_seconds:
        return [Unit((index,), video) for index, video in enumerate(videos)], []
    units, failed = [], []
    for index, video in enumerate(tqdm(videos, desc="probe", unit="video", disable=not args.progress)):
        found = window_units(index, video, args.window_seconds, args.stride_seconds or args.window_seconds)
        (failed.append(found) if isinstance(found, Row) else units.extend(found))
    return units, failed


def run(args: argparse.Namespace) -> tuple[list[Row], list[str]]:
    """Predict every input on this process's share; returns all rows (on rank 0) and class names."""
    from harness.parallel.strategy import build_strategy

    strategy = build_strategy("auto", args.device, "float32", "auto")
    device, dtype = strategy.device, getattr(torch, args.dtype)
    model, preprocessing = load_classifier(args.model, args.weights)
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
    rows += predict_units(model, loader, preprocessing, device, dtype, args.top_k, progress, len(mine))
    if shards:
        ordered = [((len(videos) + number,), shard) for number, shard in enumerate(shards)][rank::world]
        loader = DataLoader(ShardUnits(ordered, preprocessing, args.decoder), **options)
        samples = sum(s.samples or 0 for _, s in ordered) or None
        rows += predict_units(model, loader, preprocessing, device, dtype, args.top_k, progress, samples)
    rows += video_aggregates(rows, args.top_k)
    for row in rows:
        row.probs = None  # only the aggregates needed them; keep the gather small
    gathered = [row for part in strategy.gather_objects(rows) for row in part]
    strategy.close()
    return (sorted(gathered, key=lambda row: row.order) if strategy.is_main else []), names


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="harness-predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("model", help="run folder, checkpoint, exported or Hugging Face classifier directory")
    parser.add_argument("inputs", nargs="+", help="video files, folders, listings or shard manifests")
    parser.add_argument("--output", type=Path, default=None, help="predictions file: .csv or .jsonl")
    parser.add_argument("--top-k", type=int, default=5, help="classes per row (default 5)")
    parser.add_argument("--window-seconds", type=float, default=None, help="predict each window of this length")
    parser.add_argument("--stride-seconds", type=float, default=None, help="window start every S s (default: W)")
    parser.add_argument("--batch-size", type=int, default=8, help="videos (windows) per forward pass")
    parser.add_argument("--workers", type=int, default=2, help="decoding processes")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--decoder", default="auto", choices=("auto", "torchcodec", "decord", "pyav"))
    add_weights_option(parser)
    parser.add_argument("--num-clips", type=int, default=None, help="clips per video (default: the model's)")
    parser.add_argument("--num-views", type=int, default=None, help="spatial views per clip (default: the model's)")
    parser.add_argument("--frame-step", type=int, default=None, help="take every k-th frame (default: the model's)")
    parser.add_argument("--fps", type=float, default=None, help="sample clips at this rate instead")
    parser.add_argument("--duration", type=float, default=None, help="clips spanning this many seconds instead")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    args = parser.parse_args(argv)
    for key in ("top_k", "batch_size", "num_clips", "num_views", "frame_step"):
        if getattr(args, key) is not None and getattr(args, key) < 1:
            raise UserError(f"--{key.replace('_', '-')} must be >= 1, got {getattr(args, key)}")
    for key in ("window_seconds", "stride_seconds", "fps", "duration"):
        if getattr(args, key) is not None and not getattr(args, key) > 0:
            raise UserError(f"--{key.replace('_', '-')} must be > 0, got {getattr(args, key)}")
    if args.workers < 0:
        raise UserError(f"--workers must be >= 0, got {args.workers}")
    if args.output is not None and args.output.suffix not in (".csv", ".jsonl", ".json"):
        raise UserError(f"--output {args.output}: use a .csv or .jsonl file")
    return args


@entry_point
def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    rows, names = run(args)
    if not rows:  # another rank: rank 0 reports
        return 0
    windows = bool(args.window_seconds)
    if args.output is not None:
        write_rows(rows, args.output, names, args.top_k, windows)
    shown = [row for row in rows if not windows or row.window == "all" or row.error]
    for row in shown[:50] if args.output is not None else shown:
        best = ", ".join(f"{names[c]} {100 * p:.1f}%" for c, p in row.top[:3])
        print(f"{row.video}: {best or 'ERROR ' + row.error}")
    if args.output is not None and len(shown) > 50:
        print(f"... ({len(shown) - 50} more in {args.output})")
    failed = sum(1 for row in rows if row.error)
    predicted = len(rows) - failed
    print(f"predicted {predicted} {'rows' if windows else 'videos'}, {failed} unreadable"
          + (f"; wrote {args.output}" if args.output is not None else ""))  # fmt: skip
    if predicted == 0:
        raise RunFailed("nothing could be predicted: every input was unreadable (see the errors above)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
