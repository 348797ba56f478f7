"""The work behind ``python -m harness.embed`` (:mod:`harness.embed.cli`): inputs to jobs, jobs to
ranks, batches of clips to features, features to shard files (:mod:`harness.embed.store`)."""

from __future__ import annotations

import argparse
import hashlib
import logging
from bisect import bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from harness.core.errors import RunFailed, UserError
from harness.core.progress import progress as progress_bar
from harness.data.shard_io import Shard
from harness.data.transforms import normalize_clips
from harness.data.units import ShardUnits, Unit, VideoUnits, build_units, collate_units, collect_inputs
from harness.data.workers import die_with_parent
from harness.embed.features import check_request, embed_clips
from harness.embed.source import CLIP_KEYS, EmbeddingModel, EncoderOptions, load_embedding_model
from harness.embed.store import EmbeddingFolder, JobWriter

log = logging.getLogger("harness.embed")


@dataclass
class Job:
    """A fixed run of units whose features go to the same shard file(s): videos (or windows) and
    the videos already known unreadable, in input order, or all samples of one input shard."""

    number: int
    entries: list[tuple[Unit, str | None]] = field(default_factory=list)  #: (unit, error or None)
    shard: Shard | None = None


def plan_jobs(units: list[Unit], failed: list[tuple[Unit, str]], shards: list[Shard], rows_per_shard: int) -> list[Job]:
    """Jobs of ``rows_per_shard`` units (and failures) in input order, then one job per shard."""
    entries: list[tuple[Unit, str | None]] = sorted([*((unit, None) for unit in units), *failed],
                                                    key=lambda entry: entry[0].order)  # fmt: skip
    jobs = [Job(number, entries[start : start + rows_per_shard])
            for number, start in enumerate(range(0, len(entries), rows_per_shard))]  # fmt: skip
    return jobs + [Job(len(jobs) + number, shard=shard) for number, shard in enumerate(shards)]


def plan_fingerprint(jobs: list[Job]) -> str:
    """SHA-256 of what the jobs read (videos, windows, shards): a rerun on other inputs differs."""
    digest = hashlib.sha256()
    for job in jobs:
        for unit, _ in job.entries:
            digest.update(f"{unit.video}\0{unit.frames}\n".encode())
        if job.shard is not None:
            digest.update(f"{job.shard.url}\0{job.shard.sha256}\n".encode())
    return digest.hexdigest()


@dataclass
class Embedder:
    """How a batch becomes features: the model on its device, the clips' preprocessing, which
    features (:func:`harness.embed.features.embed_clips`)."""

    loaded: EmbeddingModel
    device: torch.device
    dtype: torch.dtype
    features: list[str]
    levels: list[int]
    normalize: str | None

    def __call__(self, batch: Any) -> dict[str, Any]:
        p = self.loaded.preprocessing
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            clips = normalize_clips(batch.clips.to(self.device), p.mean, p.std)
            values = embed_clips(self.loaded.model, clips, batch.clip_indices.to(self.device), p.num_views,
                                 self.features, self.levels, self.normalize)  # fmt: skip
        return {name: value.cpu().numpy() for name, value in values.items()}


def write_batches(loader: Iterable, embedder: Embedder, writer_for: Callable[[Unit], JobWriter], bar: Any) -> None:
    """Every unit of ``loader`` (batches of :func:`collate_units`) to its job's writer, in unit order."""
    for units, batch, failed in loader:
        values = embedder(batch) if batch is not None else {}
        items: list[tuple[Unit, int | str]] = [*((unit, row) for row, unit in enumerate(units)), *failed]
        for unit, item in sorted(items, key=lambda pair: pair[0].order):
            if isinstance(item, str):
                log.warning("cannot embed %s: %s", unit.video, item)
                writer_for(unit).fail(unit, item)
            else:
                writer_for(unit).add(unit, {name: value[item : item + 1] for name, value in values.items()})
        bar.update(len(units) + len(failed))


class OrderedJobs:
    """The writers of video jobs whose units arrive in input order: a job is finished as soon as a
    unit of a later job arrives (its known failures are written when it starts)."""

    def __init__(self, jobs: list[Job], open_writer: Callable[[int], JobWriter]) -> None:
        self.jobs, self.open_writer = jobs, open_writer
        self.starts = [job.entries[0][0].order for job in jobs]
        self.index, self.writer = -1, None

    def writer_for(self, unit: Unit) -> JobWriter:
        target = bisect_right(self.starts, unit.order) - 1
        while self.index < target:
            self._next()
        return self.writer

    def _next(self) -> None:
        if self.writer is not None:
            self.writer.finish()
        self.index += 1
        job = self.jobs[self.index]
        self.writer = self.open_writer(job.number)
        for unit, error in job.entries:
            if error is not None:
                self.writer.fail(unit, error)

    def close(self) -> None:
        while self.index < len(self.jobs) - 1:
            self._next()
        if self.writer is not None:
            self.writer.finish()
            self.writer = None


def embed_jobs(jobs: list[Job], embedder: Embedder, open_writer: Callable[[int], JobWriter], args: argparse.Namespace,
               progress: bool) -> None:  # fmt: skip
    """Embed ``jobs`` (this rank's share): the video jobs through one loader, the shard jobs one
    per decoding process at a time (each shard job is finished when its loader ends)."""
    videos = [job for job in jobs if job.shard is None]
    tars = [job for job in jobs if job.shard is not None]
    preprocessing = embedder.loaded.preprocessing
    options = {"batch_size": args.batch_size, "num_workers": args.workers, "collate_fn": collate_units,
               "worker_init_fn": die_with_parent if args.workers else None}  # fmt: skip
    units = [unit for job in videos for unit, error in job.entries if error is None]
    samples = sum(job.shard.samples or 0 for job in tars) if all(job.shard.samples for job in tars) else None
    total = len(units) + samples if samples is not None else None
    bar = progress_bar(total=total, desc="embed", unit="video", enabled=progress)
    if videos:
        ordered = OrderedJobs(videos, open_writer)
        write_batches(DataLoader(VideoUnits(units, preprocessing, args.decoder), **options), embedder,
                      ordered.writer_for, bar)  # fmt: skip
        ordered.close()
    group = max(1, args.workers)
    for start in range(0, len(tars), group):
        writers = {job.number: open_writer(job.number) for job in tars[start : start + group]}
        dataset = ShardUnits([((job.number,), job.shard) for job in tars[start : start + group]], preprocessing,
                             args.decoder)  # fmt: skip
        write_batches(DataLoader(dataset, **options), embedder, lambda unit, open=writers: open[unit.order[0]], bar)
        for writer in writers.values():
            writer.finish()
    bar.close()


def build_request(loaded: EmbeddingModel, args: argparse.Namespace, jobs: list[Job], units: int) -> dict[str, Any]:
    """What defines the output (``embeddings.json``'s ``request``): a rerun with another is refused."""
    return {
        "source": loaded.description,
        "features": list(args.features),
        "levels": list(args.levels or []),
        "normalize": args.normalize,
        "format": args.format,
        "rows_per_shard": args.rows_per_shard,
        "dtype": args.dtype,
        "preprocessing": loaded.preprocessing.as_dict(),
        "window_seconds": args.window_seconds,
        "stride_seconds": args.stride_seconds or args.window_seconds,
        "inputs": {"sha256": plan_fingerprint(jobs), "units": units, "jobs": len(jobs)},
    }


def load(args: argparse.Namespace) -> EmbeddingModel:
    """The model of ``args.model``, checked against the features asked."""
    clip = {key: getattr(args, key) for key in CLIP_KEYS}
    options = EncoderOptions(args.model_name, args.patch_size, args.tubelet_size, args.checkpoint_key)
    loaded = load_embedding_model(args.model, args.weights, options, frames_per_clip=args.frames,
                                  crop_size=args.crop_size, **clip)  # fmt: skip
    try:
        check_request(loaded.model, args.features, args.levels or [])
    except ValueError as error:
        raise UserError(f"--features {','.join(args.features)}: {error}") from None
    return loaded


def run(args: argparse.Namespace) -> dict[str, int] | None:
    """Embed every input into ``args.output`` on this process's share of the jobs; on rank 0, the
    counts of the whole output (None on other ranks)."""
    from harness.parallel.build import build_strategy

    strategy = build_strategy("auto", args.device, "float32", "auto")
    loaded = load(args)
    loaded.model = loaded.model.to(strategy.device).eval()
    embedder = Embedder(loaded, strategy.device, getattr(torch, args.dtype), list(args.features),
                        list(args.levels or []), args.normalize)  # fmt: skip
    videos, shards = collect_inputs(args.inputs)
    units, failed = build_units(videos, args.window_seconds, args.stride_seconds, args.progress and strategy.is_main)
    jobs = plan_jobs(units, failed, shards, args.rows_per_shard)
    request = build_request(loaded, args, jobs, len(units) + len(failed))
    folder = EmbeddingFolder(args.output, args.format)
    problem, pending = None, []
    if strategy.is_main:  # one process looks and prepares; the others take its answer
        problem = folder.problem(request, args.overwrite)
        if problem is None:
            folder.prepare(request, args.overwrite, [str(Path(item).resolve()) for item in args.inputs])
            pending = [job.number for job in jobs if not folder.is_done(job.number)]
    problem, pending = strategy.gather_objects((problem, pending))[0]
    if problem is not None:
        strategy.close()
        raise UserError(problem)
    log.info("%d of %d jobs to do (%d units); the others were finished by an earlier run", len(pending), len(jobs),
             len(units) + len(failed))  # fmt: skip
    mine = [jobs[number] for number in pending[strategy.rank :: strategy.world_size]]
    open_writer = lambda number: JobWriter(folder, number, args.rows_per_shard, strategy.rank)  # noqa: E731
    embed_jobs(mine, embedder, open_writer, args, args.progress and strategy.is_main)
    strategy.barrier()
    counts = None
    if strategy.is_main:
        description = {"request": request, "inputs": [str(Path(item).resolve()) for item in args.inputs]}
        counts = folder.merge(len(jobs), description)
    strategy.close()
    if counts is not None and counts["embedded"] == 0:
        raise RunFailed(f"nothing could be embedded: every input was unreadable (see {folder.folder / 'index.csv'})")
    return counts
