"""Which frames a clip uses: frame step from ``frame_step`` / ``fps`` / ``duration``, and
the start of each of ``num_clips`` clips in a video.

Everything here is pure index arithmetic on frame counts, so it is cheap to test exhaustively.

Semantics (documented in the README):

* A clip has ``frames_per_clip`` frames taken every ``frame_step`` source frames, so it spans
  ``(frames_per_clip - 1) * frame_step + 1`` source frames.
* The video is cut into ``num_clips`` equal segments and one clip is drawn per segment: at a
  random position for training (``random_clip_sampling``), centred for evaluation.
* When a clip is longer than its segment and ``allow_clip_overlap`` is set, clip starts are
  spread evenly over the whole video instead (clips may then overlap). Without overlap the clip
  starts at its segment's start and stays inside the segment.
* Indices that would fall past the available frames repeat the last available frame (padding),
  so a video shorter than a clip still yields ``frames_per_clip`` frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class ClipSpecError(ValueError):
    """An inconsistent clip-sampling configuration; the message names the conflicting keys."""


@dataclass(frozen=True)
class ClipSpec:
    """How to sample one clip from one dataset.

    Exactly one of ``frame_step``, ``fps`` and ``duration`` must be set.

    Attributes:
        frames_per_clip: frames in a clip (V-JEPA 2's ``dataset_fpcs`` entry).
        frame_step: take every ``frame_step``-th source frame.
        fps: target sampling rate in frames per second; the step is derived per video from the
            video's own frame rate (``round(video_fps / fps)``, at least 1).
        duration: seconds spanned by a clip; the step is ``round(duration * video_fps /
            frames_per_clip)``, at least 1.
    """

    frames_per_clip: int
    frame_step: int | None = None
    fps: float | None = None
    duration: float | None = None

    def __post_init__(self) -> None:
        if self.frames_per_clip < 1:
            raise ClipSpecError(f"frames_per_clip must be >= 1, got {self.frames_per_clip}")
        given = [k for k in ("frame_step", "fps", "duration") if getattr(self, k) is not None]
        if len(given) != 1:
            which = ", ".join(given) if given else "none of them"
            raise ClipSpecError(f"set exactly one of frame_step, fps, duration (got {which})")
        value = getattr(self, given[0])
        if value <= 0:
            raise ClipSpecError(f"{given[0]} must be > 0, got {value}")

    def step_for(self, video_fps: float) -> int:
        """Source-frame step for a video recorded at ``video_fps`` frames per second."""
        if self.frame_step is not None:
            return int(self.frame_step)
        if not video_fps or video_fps <= 0:
            raise ClipSpecError("fps/duration sampling needs the video's frame rate, which is unknown")
        if self.fps is not None:
            return max(1, round(video_fps / self.fps))
        return max(1, round(self.duration * video_fps / self.frames_per_clip))

    def span(self, video_fps: float) -> int:
        """Source frames covered by one clip of a video at ``video_fps``."""
        return (self.frames_per_clip - 1) * self.step_for(video_fps) + 1


def clip_starts(
    num_frames: int,
    span: int,
    num_clips: int,
    *,
    random: bool,
    allow_clip_overlap: bool,
    rng: np.random.Generator | None = None,
) -> tuple[list[int], list[int]]:
    """Start frame and last usable frame of each of ``num_clips`` clips.

    Returns:
        ``(starts, limits)``: clip ``i`` begins at ``starts[i]`` and its indices are clamped to
        ``limits[i]`` (the last frame of its segment, or of the video), which implements padding.
    """
    if num_frames < 1:
        raise ValueError(f"video has no frames (num_frames={num_frames})")
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    if random and rng is None:
        raise ValueError("random clip sampling needs an rng")
    bounds = [(i * num_frames) // num_clips for i in range(num_clips + 1)]
    starts: list[int] = []
    limits: list[int] = []
    for i in range(num_clips):
        seg_start, seg_end = bounds[i], max(bounds[i + 1], bounds[i] + 1)
        seg_end = min(seg_end, num_frames)
        seg_len = seg_end - seg_start
        if span <= seg_len:
            slack = seg_len - span
            offset = int(rng.integers(0, slack + 1)) if random else slack // 2
            starts.append(seg_start + offset)
            limits.append(seg_end - 1)
        elif allow_clip_overlap:
            # Spread clips evenly over the whole video; they overlap when the video is short.
            slack = max(0, num_frames - span)
            starts.append((i * slack) // (num_clips - 1) if num_clips > 1 else slack // 2)
            limits.append(num_frames - 1)
        else:
            starts.append(seg_start)
            limits.append(seg_end - 1)
    return starts, limits


def sample_clip_indices(
    num_frames: int,
    video_fps: float,
    spec: ClipSpec,
    num_clips: int = 1,
    *,
    random: bool = False,
    allow_clip_overlap: bool = False,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Frame indices of every clip of a video.

    Args:
        num_frames: frames in the video.
        video_fps: the video's average frame rate (used by ``fps``/``duration`` specs).
        spec: frames per clip and step rule.
        num_clips: clips per video (one per equal segment).
        random: random clip position inside its segment (training) instead of centred.
        allow_clip_overlap: spread clips over the whole video when they do not fit a segment.
        rng: generator for random positions.

    Returns:
        ``int64`` array ``[num_clips, frames_per_clip]``; every index lies in ``[0, num_frames)``
        and indices are non-decreasing within a clip (repeats mean padding).
    """
    step = spec.step_for(video_fps)
    span = (spec.frames_per_clip - 1) * step + 1
    starts, limits = clip_starts(
        num_frames, span, num_clips, random=random, allow_clip_overlap=allow_clip_overlap, rng=rng
    )
    offsets = np.arange(spec.frames_per_clip, dtype=np.int64) * step
    indices = np.asarray(starts, dtype=np.int64)[:, None] + offsets[None, :]
    return np.minimum(indices, np.asarray(limits, dtype=np.int64)[:, None])
