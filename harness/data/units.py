"""New videos as units of work for the commands that read a trained model (``harness.predict``,
``harness.embed``): inputs of any kind to paths and shards, videos to whole-video or window units,
and the datasets that decode them into evaluation clips, reporting the videos that cannot be used
instead of failing.

A unit's ``order`` sorts the outputs in input order: ``(video,)``, ``(video, window)`` or, for a
sample of a shard, ``(shard position, sample)``.
"""

from __future__ import annotations

import logging
import os
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from harness.core.errors import UserError
from harness.core.progress import progress as progress_bar
from harness.data.decode import IMAGE_EXTENSIONS, DecodeError, is_image, open_video
from harness.data.files import ClipItem, load_clips
from harness.data.frame_folders import FrameFolderReader, frame_number
from harness.data.listing import read_listing
from harness.data.loader import collate_clips
from harness.data.sampling import ClipSpec, ClipSpecError
from harness.data.segments import segment_frames, segment_name, split_segment_name
from harness.data.shard_io import VIDEO_EXTENSIONS, Shard, decode_sample, list_shards, read_samples

LISTING_SUFFIXES = (".csv", ".txt", ".npy")
MEDIA = VIDEO_EXTENSIONS + IMAGE_EXTENSIONS  #: what a folder given as input is searched for
log = logging.getLogger(__name__)


class ClipSettings(Protocol):
    """How a video becomes clips: what the datasets below read of a model's preprocessing
    (:class:`harness.export.model_io.Preprocessing` is one)."""

    num_clips: int

    def clip_spec(self) -> ClipSpec: ...

    def transform(self) -> Callable: ...


@dataclass(slots=True)
class Unit:
    """One thing to predict or embed: a video, or a window ``[start, end)`` (frames) of one
    (slots: a long video's windows can be millions of units)."""

    order: tuple
    video: str
    frames: tuple[int, int] | None = None
    seconds: tuple[float, float] | None = None


@dataclass
class FrameRates:
    """The frame rate of each frame folder: its listing line's (``fps`` column), else ``default``
    (``--frame-fps``); None: unknown."""

    default: float | None = None
    lines: dict[str, float] = field(default_factory=dict)  #: a video's name -> its line's rate

    def of(self, video: str) -> float | None:
        return self.lines.get(video) or self.default


def rate_of(frame_fps: float | FrameRates | None, video: str) -> float | None:
    """The frame rate ``video`` is read at, if it is a frame folder (one rate, or per line)."""
    return frame_fps.of(video) if isinstance(frame_fps, FrameRates) else frame_fps


def collect_inputs(inputs: list[str], frame_folders: bool = False, rates: dict[str, float] | None = None,
                   ) -> tuple[list[str], list[Shard]]:  # fmt: skip
    """Video and image paths (files, folders searched recursively, listings) and shards (manifests),
    in order. ``frame_folders``: a searched folder that directly holds numbered images (the input
    itself or one below it) is one video of those frames (:mod:`harness.data.frame_folders`), not
    one image per file; a listing line that is a folder is one whatever this says. ``rates``, when
    given, receives the frame rate of each listed video whose line gives one (an ``fps`` column)."""
    videos: list[str] = []
    shards: list[Shard] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = search_folder(path, frame_folders)
            if not found:
                raise UserError(f"{path}: no video or image files ({', '.join(MEDIA)}) in it or below it")
            videos += found
        elif path.suffix == ".json":
            shards += list_shards(str(path))
        elif path.suffix.lower() in LISTING_SUFFIXES:
            listing = read_listing(path)  # a line with a segment is that segment: path#t=start,end
            unit = listing.segment_unit
            names = [segment_name(listing.path(i), listing.segment(i), unit) for i in range(len(listing))]
            if rates is not None and listing.rates is not None:
                rates.update((name, rate) for name, rate in zip(names, listing.rates.tolist()) if rate > 0)
            videos += names
        elif path.is_file():
            videos.append(str(path))
        else:
            raise UserError(f"input not found: {path}")
    return videos, shards


def search_folder(folder: Path, frame_folders: bool) -> list[str]:
    """The media below ``folder``, sorted (see :func:`collect_inputs`); each folder listed once, by name."""
    found, hinted = [], []
    for top, _, names in os.walk(folder, followlinks=True):  # (as Path.rglob: linked folders are searched)
        numbered = sum(frame_number(name) is not None for name in names)
        if numbered and frame_folders:
            found.append(top)  # its images are its frames
            names = [name for name in names if not is_image(name)]
        elif numbered > 1:
            hinted.append(top)
        found += [os.path.join(top, name) for name in names if os.path.splitext(name)[1].lower().lstrip(".") in MEDIA]
    if hinted:  # a folder of photos named IMG_0001.jpg... looks the same: say how to read them as videos
        log.info("%d folder(s) of numbered images (e.g. %s): each image is one input; --frame-folders reads each "
                 "such folder as one video of its frames", len(hinted), hinted[0])  # fmt: skip
    return sorted(found, key=Path)  # (the order of Path.rglob's sorted results before)


def video_length(video: str, frame_fps: float | FrameRates | None = None) -> tuple[int, float]:
    """``(frames, fps)`` of a video (30 fps when it does not say; a frame folder's rate is
    ``frame_fps``), or of a segment of one (:func:`~harness.data.segments.segment_name`);
    :class:`DecodeError` or ``OSError`` when it cannot be opened, or when it is a frame folder
    without a rate (windows in seconds need one)."""
    path, segment, unit = split_segment_name(video)
    reader = open_video(path, fps=rate_of(frame_fps, video))
    frames, fps = reader.num_frames, reader.fps or 30.0
    if segment is not None:
        first, end = segment_frames(segment, unit, reader.fps, reader.num_frames)
        frames = end - first
    reader.close()
    if isinstance(reader, FrameFolderReader) and not reader.fps:
        raise DecodeError(f"frame folder {path} has no frame rate for windows in seconds: give --frame-fps")
    return frames, fps


def window_starts(frames: int, fps: float, window_s: float, stride_s: float) -> tuple[list[int], int]:
    """First frames of the windows of ``window_s`` seconds every ``stride_s`` seconds covering a
    video of ``frames`` frames at ``fps`` (the last one ends at the video's end), and their length."""
    length, stride = max(1, round(window_s * fps)), max(1, round(stride_s * fps))
    starts = list(range(0, max(1, frames - length + 1), stride))
    if starts[-1] + length < frames:
        starts.append(frames - length)
    return starts, length


def windows(index: int, video: str, frames: int, fps: float, window_s: float, stride_s: float) -> list[Unit]:
    """The :func:`window_starts` windows of a video as units ``(index, window)``."""
    starts, length = window_starts(frames, fps, window_s, stride_s)
    units = []
    for number, start in enumerate(starts):
        end = min(frames, start + length)  # times to the millisecond
        units.append(Unit((index, number), video, (start, end), (round(start / fps, 3), round(end / fps, 3))))
    return units


def window_units(
    index: int, video: str, window_s: float, stride_s: float, frame_fps: float | None = None
) -> list[Unit]:
    """:func:`windows` of the video at ``video`` (a frame folder at ``frame_fps``); :class:`DecodeError`
    or ``OSError`` when it cannot be opened."""
    return windows(index, video, *video_length(video, frame_fps), window_s, stride_s)


Probed = tuple[np.ndarray, dict[int, str]]  #: ``(frames, fps)`` per video (-1 where unreadable), errors by index


def probe_lengths(videos: list[str], indices: range, progress: bool = True, frame_fps: float | None = None) -> Probed:
    """``(frames, fps)`` of ``videos[i]`` for ``i`` in ``indices`` (each opened once; other rows -1;
    frame folders at ``frame_fps``) and the errors of those that cannot be opened: one rank's share
    of the probing."""
    lengths, errors = np.full((len(videos), 2), -1.0), {}
    for index in progress_bar(indices, desc="probe", unit="video", enabled=progress):
        try:
            lengths[index] = video_length(videos[index], frame_fps)
        except (DecodeError, OSError) as error:
            errors[index] = str(error)
    return lengths, errors


def merge_probes(shares: list[Probed]) -> Probed:
    """Every rank's :func:`probe_lengths` share as one (the ranks probed disjoint videos)."""
    lengths = np.max(np.stack([share[0] for share in shares]), axis=0)
    return lengths, {index: error for _, errors in shares for index, error in errors.items()}


def build_units(videos: list[str], window_seconds: float | None, stride_seconds: float | None, progress: bool = True,
                probed: Probed | None = None, frame_fps: float | None = None,
                ) -> tuple[list[Unit], list[tuple[Unit, str]]]:  # fmt: skip
    """The units of ``videos`` (whole videos, or with ``window_seconds`` their windows every
    ``stride_seconds``, default the window) and, for each video whose windows cannot be found
    because it cannot be opened, its whole-video unit and the error message. Windows need each
    video's length: ``probed`` (every rank's share of :func:`probe_lengths`, merged), or, when None,
    every video opened here."""
    if not window_seconds:
        return [Unit((index,), video) for index, video in enumerate(videos)], []
    lengths, errors = probed if probed is not None else probe_lengths(videos, range(len(videos)), progress, frame_fps)
    units: list[Unit] = []
    failed: list[tuple[Unit, str]] = []
    for index, video in enumerate(videos):
        if index in errors:
            failed.append((Unit((index,), video), errors[index]))
        else:
            units += windows(index, video, int(lengths[index, 0]), lengths[index, 1], window_seconds,
                             stride_seconds or window_seconds)  # fmt: skip
    return units, failed


class VideoUnits(Dataset):
    """``(unit, clips or error message)`` of each unit: a video that cannot be used is reported.
    ``frame_fps``: the frame rate of frame folders, one or per line (:class:`FrameRates`; None:
    unknown, which ``fps`` / ``duration`` sampling reports as the folder's error)."""

    def __init__(self, units: list[Unit], preprocessing: ClipSettings, decoder: str,
                 frame_fps: float | FrameRates | None = None) -> None:  # fmt: skip
        self.units, self.spec, self.decoder = units, preprocessing.clip_spec(), decoder
        self.transform, self.num_clips = preprocessing.transform(), preprocessing.num_clips
        self.frame_fps = frame_fps

    def __len__(self) -> int:
        return len(self.units)

    def __getitem__(self, index: int) -> tuple[Unit, ClipItem | str]:
        unit = self.units[index]
        path, segment, segment_unit = split_segment_name(unit.video)
        try:
            clips, indices = load_clips(path, self.spec, self.num_clips, self.transform, random=False,
                                        allow_clip_overlap=False, rng=np.random.default_rng(0), decoder=self.decoder,
                                        frame_range=unit.frames, fps=rate_of(self.frame_fps, unit.video),
                                        segment=segment,
                                        segment_unit=segment_unit)  # fmt: skip
        except (DecodeError, OSError) as error:
            return unit, str(error)
        except ClipSpecError as error:  # fps / duration sampling of a video (a frame folder) without a rate
            hint = ": give --frame-fps, or sample with --frame-step" if os.path.isdir(path) else ""
            return unit, f"{error}{hint}"
        return unit, ClipItem(clips, 0, indices, unit.video)


class ShardUnits(IterableDataset):
    """``(unit, clips or error message)`` of every sample of the shards (a worker reads whole shards)."""

    def __init__(self, shards: list[tuple[tuple, Shard]], preprocessing: ClipSettings, decoder: str) -> None:
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
