"""The work behind ``python -m harness.embed`` (:mod:`harness.embed.cli`): inputs to jobs, jobs to
ranks, batches of clips to features, features to shard files (:mod:`harness.embed.store`)."""

from __future__ import annotations

import argparse
import logging
from bisect import bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from harness.core.errors import RunFailed, UserError
from harness.core.progress import progress as progress_bar
from harness.data.transforms import normalize_clips
from harness.data.units import (
    FrameRates,
    ShardUnits,
    Unit,
    VideoUnits,
    collate_units,
    collect_inputs,
    merge_probes,
    probe_lengths,
)
from harness.data.workers import die_with_parent
from harness.embed.features import check_request, embed_clips
from harness.embed.plan import Entry, Plan, plan_jobs
from harness.embed.source import CLIP_KEYS, EmbeddingModel, EncoderOptions, load_embedding_model
from harness.embed.store import EmbeddingFolder, JobWriter

log = logging.getLogger("harness.embed")


#: video units per loader: the units of a rank's video jobs are made this many at a time
LOADER_UNITS = 16384


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

    def __init__(self, jobs: list[tuple[int, list[Entry]]], open_writer: Callable[[int], JobWriter]) -> None:
        self.jobs, self.open_writer = jobs, open_writer
        self.starts = [entries[0][0].order for _, entries in jobs]
        self.index, self.writer = -1, None

    def writer_for(self, unit: Unit) -> JobWriter:
        """The writer of ``unit``'s job (the jobs before it are finished on the way)."""
        target = bisect_right(self.starts, unit.order) - 1
        while self.index < target:
            self._next()
        return self.writer

    def _next(self) -> None:
        if self.writer is not None:
            self.writer.finish()
        self.index += 1
        number, entries = self.jobs[self.index]
        self.writer = self.open_writer(number)
        for unit, error in entries:
            if error is not None:
                self.writer.fail(unit, error)

    def close(self) -> None:
        """Finish every job left, those with no unit to embed included."""
        while self.index < len(self.jobs) - 1:
            self._next()
        if self.writer is not None:
            self.writer.finish()
            self.writer = None


def embed_jobs(plan: Plan, jobs: list[int], embedder: Embedder, open_writer: Callable[[int], JobWriter],
               args: argparse.Namespace, progress: bool, frame_rates: FrameRates | None = None) -> None:  # fmt: skip
    """Embed ``jobs`` (this rank's share of ``plan``'s): the video jobs through loaders of about
    :data:`LOADER_UNITS` units, the shard jobs one per decoding process at a time (a shard job is
    finished when its loader ends). ``frame_rates``: the frame folders' rates (None: ``--frame-fps``)."""
    videos = [job for job in jobs if plan.shard(job) is None]
    tars = [job for job in jobs if plan.shard(job) is not None]
    preprocessing = embedder.loaded.preprocessing
    options = {"batch_size": args.batch_size, "num_workers": args.workers, "collate_fn": collate_units,
               "worker_init_fn": die_with_parent if args.workers else None}  # fmt: skip
    samples = [plan.shard(job).samples for job in tars]
    count = sum(min(plan.rows_per_shard, plan.units - job * plan.rows_per_shard) for job in videos)
    total = count + sum(samples) if all(samples) else None
    bar = progress_bar(total=total, desc="embed", unit="video", enabled=progress)
    group = max(1, LOADER_UNITS // plan.rows_per_shard)
    for start in range(0, len(videos), group):
        chunk = [(job, plan.entries(job)) for job in videos[start : start + group]]
        units = [unit for _, entries in chunk for unit, error in entries if error is None]
        ordered = OrderedJobs(chunk, open_writer)
        rates = frame_rates or args.frame_fps
        write_batches(DataLoader(VideoUnits(units, preprocessing, args.decoder, rates), **options), embedder,
                      ordered.writer_for, bar)  # fmt: skip
        ordered.close()
    group = max(1, args.workers)
    for start in range(0, len(tars), group):
        writers = {job: open_writer(job) for job in tars[start : start + group]}
        dataset = ShardUnits([((job,), plan.shard(job)) for job in writers], preprocessing, args.decoder)
        write_batches(DataLoader(dataset, **options), embedder, lambda unit, open=writers: open[unit.order[0]], bar)
        for writer in writers.values():
            writer.finish()
    bar.close()


def build_request(loaded: EmbeddingModel, args: argparse.Namespace, plan: Plan) -> dict[str, Any]:
    """What defines the output (``embeddings.json``'s ``request``): a rerun with another is refused."""
    return {
        "source": loaded.description,
        "features": list(args.features),
        "levels": list(args.levels or []),
        "normalize": args.normalize,
        "format": args.format,
        "rows_per_shard": args.rows_per_shard,
        "dtype": args.dtype,
        "decoder": args.decoder,  # another decoder's frames may differ by rounding: not mixed in one folder
        "preprocessing": loaded.preprocessing.as_dict(),
        **({"frame_fps": args.frame_fps} if args.frame_fps else {}),  # (absent when unset: older outputs resume)
        "window_seconds": args.window_seconds,
        "stride_seconds": args.stride_seconds or args.window_seconds,
        "inputs": {"sha256": plan.fingerprint(), "units": plan.units, "jobs": plan.jobs},
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
    rates: dict[str, float] = {}
    videos, shards = collect_inputs(args.inputs, args.frame_folders, rates)
    frame_rates = FrameRates(args.frame_fps, rates)  # a listing line's fps, else --frame-fps
    probed = None
    if args.window_seconds:  # each rank opens its share of the videos; all plan from the same lengths
        share = range(strategy.rank, len(videos), strategy.world_size)
        probed = merge_probes(strategy.gather_objects(probe_lengths(videos, share, args.progress and strategy.is_main,
                                                                    frame_rates)))  # fmt: skip
    plan = plan_jobs(videos, shards, args.rows_per_shard, args.window_seconds, args.stride_seconds, probed=probed)
    request = build_request(loaded, args, plan)
    inputs = [str(Path(item).resolve()) for item in args.inputs]
    folder = EmbeddingFolder(args.output, args.format)
    problem, pending, lock = None, [], None
    if strategy.is_main:  # one process looks and prepares; the others take its answer
        try:
            problem = folder.problem(request, args.overwrite)
            lock = folder.lock() if problem is None else None
        except UserError as error:
            problem = str(error)
        if problem is None:
            folder.prepare(request, args.overwrite, inputs)
            pending = [job for job in range(plan.jobs) if not folder.is_done(job)]
    problem, pending = strategy.gather_objects((problem, pending))[0]
    if problem is not None:
        strategy.close()
        raise UserError(problem)
    if len(pending) < plan.jobs:
        log.info("%d of %d shards were finished by an earlier run; embedding the other %d", plan.jobs - len(pending),
                 plan.jobs, len(pending))  # fmt: skip
    open_writer = lambda job: JobWriter(folder, job, args.rows_per_shard, strategy.rank)  # noqa: E731
    embed_jobs(plan, pending[strategy.rank :: strategy.world_size], embedder, open_writer, args,
               args.progress and strategy.is_main, frame_rates)  # fmt: skip
    strategy.barrier()
    counts = folder.merge(plan.jobs, {"request": request, "inputs": inputs}) if strategy.is_main else None
    folder.unlock(lock)
    strategy.close()
    if counts is not None and counts["embedded"] == 0:
        raise RunFailed(f"nothing could be embedded: every input was unreadable (see {folder.folder / 'index.csv'})")
    return counts
