"""Cut one source video into staged clip files, and the worker pool that runs the cutting (and the
packing) in parallel."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from harness.data.cutting import Settings, cut_segments, cut_window, probe, probe_frame_folder
from harness.data.listing import label_ids
from harness.data.media import is_image
from harness.data.segments import split_segment_name
from harness.data.workers import die_with_parent
from harness.prepare.sources import Source

DONE = "done.json"


def cut_video(source: Source, settings: Settings, staging: Path, chunked: bool) -> list[dict]:
    """Cut one video into staged clips ``staging/<index>/<segment>.mp4``; returns their metadata.

    A ready clip (``chunked``) is not copied: its entry points at the source file (``staged``
    false, so it is never deleted); a ready clip that is a folder of frames is encoded whole into
    one. A frame folder is always encoded (at ``settings.frame_fps``). Raises on an unreadable
    video (the caller records it). The done marker (which names the source, so that a changed
    input is cut again) makes it resumable.
    """
    folder = staging / f"{source.index:08d}"
    done = folder / DONE
    if done.exists():
        record = json.loads(done.read_text())
        if isinstance(record, dict) and record.get("source") == source.path and _same_input(record, source):
            # Cut by an earlier attempt, which may have packed (and deleted) some of them.
            return [{**clip, "resumed": True} for clip in record["clips"]]
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    path, segment, unit = split_segment_name(source.path)
    if is_image(path):
        clips = [_image_clip(source)]
        done.write_text(json.dumps({**_marker(source), "clips": clips}))
        return clips
    frame_folder = os.path.isdir(path)
    if frame_folder and source.fps:  # the line's rate wins over --frame-fps (as data.frame_folder_fps in training)
        settings = replace(settings, frame_fps=source.fps)
    duration, fps, frames, size = probe_frame_folder(path, settings.frame_fps) if frame_folder else probe(path)
    if segment is not None:
        clips = _stage_window(source, path, segment, unit, settings, folder, (duration, fps, size))
    elif chunked and frame_folder:  # one segment longer than the whole folder: one clip
        whole = replace(settings, segment_seconds=duration + 1.0)
        clips = _stage(source, folder, cut_segments(source.path, whole), settings.fps or fps, size, 0.0)
    elif chunked:
        clip = _clip(source, 0, source.path, (0.0, duration, frames), settings.fps or fps, size)
        clips = [{**clip, "bytes": Path(source.path).stat().st_size, "staged": False}]
    else:
        clips = _stage_segments(source, settings, folder, duration, frames, fps, size)
    done.write_text(json.dumps({**_marker(source), "clips": clips}))
    return clips


def _marker(source: Source) -> dict:
    """What a done marker records of its source: the clips are reused only for the same input."""
    return {"source": source.path, "label": list(label_ids(source.label)), "fps": source.fps}


def _same_input(record: dict, source: Source) -> bool:
    """Whether a done marker was written for this source's label and frame rate too (a marker of an
    older version, without them, is taken as it is)."""
    marker = _marker(source)
    return all(record[key] == marker[key] for key in ("label", "fps") if key in record)


def _image_clip(source: Source) -> dict:
    """A still image packed as it is (``key.jpg``...: a 1-frame sample, see docs/data.md)."""
    from PIL import Image, UnidentifiedImageError  # (imported where used, so that --help stays fast)

    try:
        with Image.open(source.path) as image:
            size = image.size  # (width, height), from the header
    except (OSError, UnidentifiedImageError) as error:
        raise ValueError(f"cannot read image: {error}") from None
    clip = _clip(source, 0, source.path, (0.0, 0.0, 1), 0.0, size)
    return {**clip, "bytes": Path(source.path).stat().st_size, "staged": False}


def _stage_window(source: Source, path: str, segment: tuple[float, float], unit: str, settings: Settings,
                  folder: Path, probed: tuple[float, float, tuple[int, int]]) -> list[dict]:  # fmt: skip
    """Cut and write the clips of a listing line's segment of a video or frame folder (re-encoded,
    exact bounds)."""
    duration, fps, size = probed
    start, end = segment if unit == "seconds" else (segment[0] / fps, segment[1] / fps)
    if start >= duration:
        raise ValueError(f"the segment starts at {start:g} s, after the video's end ({duration:.3f} s)")
    end = min(end, duration)
    if end - start < settings.min_seconds:
        raise ValueError(f"segment shorter than --min-seconds ({end - start:.2f} s < {settings.min_seconds} s)")
    return _stage(source, folder, cut_window(path, start, end, settings), settings.fps or fps, size,
                  settings.min_seconds)  # fmt: skip


def _stage_segments(source: Source, settings: Settings, folder: Path, duration: float, frames: int, fps: float,
                    size: tuple[int, int]) -> list[dict]:  # fmt: skip
    """Cut (or keep whole, when short and not re-encoded) and write the segments of one video."""
    if duration < settings.min_seconds:
        raise ValueError(f"shorter than --min-seconds ({duration:.2f} s < {settings.min_seconds} s)")
    if not settings.reencode and duration <= settings.segment_seconds and not os.path.isdir(source.path):
        segments = [(Path(source.path).read_bytes(), 0.0, duration, frames)]  # kept whole
    else:
        segments = cut_segments(source.path, settings)
    return _stage(source, folder, segments, settings.fps or fps, size, settings.min_seconds)


def _stage(source: Source, folder: Path, segments: list[tuple[bytes, float, float, int]], fps: float,
           size: tuple[int, int], min_seconds: float) -> list[dict]:  # fmt: skip
    """Write the segments of one source into ``folder``; returns their clips' metadata."""
    clips = []
    for number, (data, start, end, count) in enumerate(segments):
        if end - start < min_seconds and len(segments) > 1:
            continue  # a short remainder at the end
        path = folder / f"{number:04d}.mp4"
        path.write_bytes(data)
        clips.append({**_clip(source, number, str(path), (start, end, count), fps, size), "bytes": len(data)})
    return clips


def _clip(source: Source, number: int, file: str, span: tuple[float, float, int], fps: float,
          size: tuple[int, int]) -> dict:  # fmt: skip
    """The metadata of one clip; ``span``: (start s, end s, frames)."""
    start, end, frames = span
    key = f"{source.index:08d}_{number:04d}"
    return {"key": key, "file": file, "source": source.path, "label": source.label, "start": round(start, 3),
            "end": round(end, 3), "fps": fps, "frames": frames, "size": list(size)}  # fmt: skip


def cut_job(args: tuple[Source, Settings, Path, bool]) -> tuple[Source, list[dict] | None, str | None]:
    """:func:`cut_video` for a worker: ``(source, clips, None)``, or ``(source, None, reason)``."""
    source, settings, staging, chunked = args
    try:
        return source, cut_video(source, settings, staging, chunked), None
    except Exception as error:  # a corrupt input is reported, never fatal
        return source, None, f"{type(error).__name__}: {error}"


def source_index(clip: dict) -> int:
    """The index of the source a clip was cut from (its key is ``<source index>_<segment>``)."""
    return int(clip["key"].split("_", 1)[0])


def remove_staged(clips: Iterable[dict]) -> None:
    """Delete the staged files of clips that are in a written shard (never a ready clip's source)."""
    for clip in clips:
        if clip.get("staged", True):
            Path(clip["file"]).unlink(missing_ok=True)


class Workers:
    """A pool of ``count`` forked processes (each ends with the process that started it), or,
    for one worker, this process (what tests patch then runs)."""

    def __init__(self, count: int) -> None:
        self.count = max(1, count)
        self.pool = None

    def __enter__(self) -> Workers:
        if self.count > 1:
            context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
            self.pool = context.Pool(self.count, initializer=die_with_parent)
        return self

    def __exit__(self, kind: Any, *exc: Any) -> None:
        if self.pool is not None:
            if kind is None:
                self.pool.close()
            else:
                self.pool.terminate()
            self.pool.join()

    def map(self, function: Callable[[Any], Any], jobs: Iterable) -> Iterator:
        """``function`` over ``jobs``, results in the order they finish."""
        if self.pool is None:
            return map(function, jobs)
        return self.pool.imap_unordered(function, jobs)
