"""Which frames a clip uses: frame step from ``frame_step`` / ``fps`` / ``duration``, and
the start of each of ``num_clips`` clips in a video.

Everything here is pure index arithmetic on frame counts, so it is cheap to test exhaustively.

Semantics (documented in docs/data.md):

* A clip has ``frames_per_clip`` frames taken every ``frame_step`` source frames, so it spans
  ``(frames_per_clip - 1) * frame_step + 1`` source frames.
* The video is cut into ``num_clips`` equal segments and one clip is drawn per segment: at a
  random position for training (``random_clip_sampling``), centred for evaluation.
* When a clip is longer than its segment and ``allow_clip_overlap`` is set, clip starts are
  spread evenly over the whole video instead (clips may then overlap). Without overlap the clip
  starts at its segment's start and stays inside the segment.
* Indices that would fall past the available frames repeat the last available frame (padding),
  so a video shorter than a clip still yields ``frames_per_clip`` frames.
* A 1-frame source (a still image) is its frame in every position of every clip.

``rule="vjepa2"`` instead reproduces V-JEPA 2's ``VideoDataset`` index arithmetic exactly (the
seed app and V-JEPA 2's evaluation read videos through it), see :func:`vjepa2_clip_indices`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from harness.core.errors import UserError

SAMPLING_RULES = ("harness", "vjepa2")


class ClipSpecError(UserError, ValueError):
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
        rule: ``harness`` (the rules above) or ``vjepa2``: V-JEPA 2's integer steps
            (``ceil(video_fps) // fps`` and ``int(duration * ceil(video_fps) / frames_per_clip)``,
            at least 1 where V-JEPA 2 would stop on an assertion) and its clip layout.
    """

    frames_per_clip: int
    frame_step: int | None = None
    fps: float | None = None
    duration: float | None = None
    rule: str = "harness"

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
        if self.rule not in SAMPLING_RULES:
            raise ClipSpecError(f"sampling rule must be one of {', '.join(SAMPLING_RULES)}, got {self.rule!r}")

    def step_for(self, video_fps: float) -> int:
        """Source-frame step for a video recorded at ``video_fps`` frames per second."""
        if self.frame_step is not None:
            return int(self.frame_step)
        if not video_fps or video_fps <= 0:
            raise ClipSpecError("fps/duration sampling needs the video's frame rate, which is unknown")
        if self.rule == "vjepa2":
            # V-JEPA 2 rounds decord's average rate up, then divides. Decoders disagree in the last
            # bit (torchcodec says 30.000000000000004 where decord says 30.0): ignore that much.
            rate = math.ceil(video_fps - 1e-9)
            step = rate // self.fps if self.fps is not None else self.duration * rate / self.frames_per_clip
            return max(1, int(step))
        if self.fps is not None:
            return max(1, round(video_fps / self.fps))
        return max(1, round(self.duration * video_fps / self.frames_per_clip))

    def span(self, video_fps: float) -> int:
        """Source frames covered by one clip of a video at ``video_fps``."""
        return (self.frames_per_clip - 1) * self.step_for(video_fps) + 1


def _check_request(num_frames: int, num_clips: int, random: bool, rng: np.random.Generator | None) -> None:
    if num_frames < 1:
        raise ValueError(f"video has no frames (num_frames={num_frames})")
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    if random and rng is None:
        raise ValueError("random clip sampling needs an rng")


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
    _check_request(num_frames, num_clips, random, rng)
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
        and indices are non-decreasing within a clip (repeats mean padding). A 1-frame source (a
        still image) gives its one frame everywhere, whatever the step rule (it has no frame rate
        for ``fps`` / ``duration`` to divide): ``frames_per_clip`` copies of it per clip, as V-JEPA 2
        repeats an image into a clip (``img_as_video_nframes``).
    """
    if num_frames == 1:
        _check_request(num_frames, num_clips, random, rng)
        return np.zeros((num_clips, spec.frames_per_clip), dtype=np.int64)
    step = spec.step_for(video_fps)
    if spec.rule == "vjepa2":
        return vjepa2_clip_indices(num_frames, step, spec.frames_per_clip, num_clips, random=random,
                                   allow_clip_overlap=allow_clip_overlap, rng=rng)  # fmt: skip
    span = (spec.frames_per_clip - 1) * step + 1
    starts, limits = clip_starts(
        num_frames, span, num_clips, random=random, allow_clip_overlap=allow_clip_overlap, rng=rng
    )
    offsets = np.arange(spec.frames_per_clip, dtype=np.int64) * step
    indices = np.asarray(starts, dtype=np.int64)[:, None] + offsets[None, :]
    return np.minimum(indices, np.asarray(limits, dtype=np.int64)[:, None])


def vjepa2_clip_indices(
    num_frames: int,
    step: int,
    frames_per_clip: int,
    num_clips: int,
    *,
    random: bool,
    allow_clip_overlap: bool,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Clip frame indices exactly as V-JEPA 2's ``VideoDataset.loadvideo_decord`` computes them.

    A clip covers ``frames_per_clip * step`` frames; the video is cut into ``num_clips``
    partitions of ``num_frames // num_clips`` frames. When a clip fits its partition it ends at
    ``clip_len`` (evaluation) or at a random end in ``[clip_len, partition)`` (training), and its
    frames are ``linspace(start, end, frames_per_clip)`` rounded down, so consecutive indices
    are ``step`` or ``step + 1`` apart. Otherwise the partition (or, with ``allow_clip_overlap``,
    the first ``clip_len`` frames, shifted by ``(num_frames - clip_len) // (num_clips - 1)`` per
    clip) is spread by ``linspace`` and the last frame repeated. Returns ``int64 [num_clips,
    frames_per_clip]``, indices clamped into ``[0, num_frames)``.
    """
    _check_request(num_frames, num_clips, random, rng)
    clip_len = frames_per_clip * step
    partition = num_frames // num_clips
    clips = []
    for i in range(num_clips):
        if partition > clip_len:
            end = int(rng.integers(clip_len, partition)) if random else clip_len
            start = end - clip_len
            indices = np.linspace(start, end, num=frames_per_clip)
            indices = np.clip(indices, start, end - 1).astype(np.int64) + i * partition
        elif not allow_clip_overlap:
            spread = np.linspace(0, partition, num=partition // step)
            indices = np.concatenate((spread, np.ones(frames_per_clip - partition // step) * partition))
            indices = np.clip(indices, 0, partition - 1).astype(np.int64) + i * partition
        else:
            sample_len = min(clip_len, num_frames) - 1
            spread = np.linspace(0, sample_len, num=sample_len // step)
            indices = np.concatenate((spread, np.ones(frames_per_clip - sample_len // step) * sample_len))
            indices = np.clip(indices, 0, sample_len - 1).astype(np.int64)
            shift = (num_frames - clip_len) // (num_clips - 1) if num_frames > clip_len else 0
            indices = indices + i * shift
        clips.append(indices)
    # V-JEPA 2 would hand a negative index to the decoder for a video shorter than num_clips
    # frames; clamping keeps such a video usable (its frames repeat).
    return np.clip(np.stack(clips), 0, num_frames - 1)
