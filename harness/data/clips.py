"""One video's clips: open it (a file, bytes, an image or a frame folder), find the frames of its
segment or window, sample every clip's frame indices, decode them at once and transform each clip
(:func:`load_clips`, what every dataset of the harness calls per item)."""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import torch

from harness.data.decode import DecodeError, is_image, open_video, read_clip_frames
from harness.data.sampling import ClipSpec, ClipSpecError, sample_clip_indices
from harness.data.segments import segment_frames
from harness.data.transforms import DecodeScale

TOO_SHORT, TOO_LARGE = 2, 3  #: why a readable video is skipped (the dataset's shared status flags)


class SkippedVideo(Exception):
    """A readable video excluded by a filter (too short, too large); not a failure.

    ``status`` is ``TOO_SHORT`` or ``TOO_LARGE``.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def load_clips(
    source: str | bytes,
    spec: ClipSpec,
    num_clips: int,
    transform: Callable[[torch.Tensor], torch.Tensor | list[torch.Tensor]],
    *,
    random: bool,
    allow_clip_overlap: bool,
    rng: np.random.Generator,
    decoder: str = "auto",
    min_frames: int = 0,
    frame_range: tuple[int, int] | None = None,
    decode_max_short_side: int | str = 0,
    image: bool | None = None,
    segment: tuple[float, float] | None = None,
    segment_unit: str = "seconds",
    fps: float | None = None,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Decode and transform the clips of one video (file path or in-memory bytes); with
    ``frame_range = (start, end)``, of that window of it (clips are sampled as if it were the
    whole video; indices stay the video's). ``decode_max_short_side`` (:class:`DecodeScale`):
    decode smaller frames where the transform allows (``"auto"``), at most that short side, or
    at full size (0). ``image``: the source is a still image, a 1-frame video whose clips repeat
    its frame (None: a path's extension tells, bytes are a video; see
    :func:`harness.data.decode.open_video`); ``min_frames`` does not apply to it. ``segment``: a
    listing line's ``(start, end)`` in ``segment_unit`` (seconds or frames), the window clips are
    drawn from (:func:`segment_frames`); the reader seeks there, it never decodes from the start.
    With both, ``frame_range`` counts from the segment's first frame. ``fps``: the
    frame rate of a folder of numbered frames (None: unknown; ignored for files, which carry theirs).

    Returns:
        ``(clips, clip_indices)``: ``num_clips * views`` tensors ``[C, T, H, W]`` and the frame
        indices ``int64 [num_clips * views, T]`` each clip used (views repeat their clip's).

    Raises:
        DecodeError: unreadable video. SkippedVideo: fewer than ``min_frames`` frames.
    """
    scale = DecodeScale(transform, decode_max_short_side) if decode_max_short_side != 0 else None
    if image is None:
        image = isinstance(source, str) and is_image(source)
    reader = open_video(source, decoder, scale=scale, image=image, fps=fps, partial=segment is not None)
    try:
        if segment is not None and not image:
            if segment_unit == "seconds" and not reader.fps and isinstance(source, str) and os.path.isdir(source):
                # every segment of such a folder would fail alike: a setting is missing, not a bad sample
                raise ClipSpecError("a segment in seconds needs the frame folder's frame rate, which is unknown")
            first, last = segment_frames(segment, segment_unit, reader.fps, reader.num_frames)
            # a window of the segment (predict / embed --window-seconds) counts from the segment's start
            frame_range = (first, last) if frame_range is None else (
                first + frame_range[0], min(last, first + frame_range[1]))  # fmt: skip
        start, end = frame_range if frame_range is not None else (0, reader.num_frames)
        end = min(end, reader.num_frames)
        if end - start < min_frames and not image:
            what = "segment of " if segment is not None else ""
            raise SkippedVideo(TOO_SHORT, f"{what}{max(0, end - start)} frames < min_frames={min_frames}")
        if end <= start:
            raise DecodeError(f"window [{start}, {end}) holds no frame of the video's {reader.num_frames}")
        indices = start + sample_clip_indices(
            end - start,
            reader.fps,
            spec,
            num_clips,
            random=random,
            allow_clip_overlap=allow_clip_overlap,
            rng=rng,
        )
        frames = read_clip_frames(reader, indices)  # [num_clips, T, H, W, 3] uint8
    finally:
        reader.close()
    clips: list[torch.Tensor] = []
    clip_indices: list[np.ndarray] = []
    # Augmentations draw from torch's CPU generator: seed it per item and restore it after, so
    # the training process's own stream is untouched when loading runs in the main process.
    # (torch.manual_seed / fork_rng would also touch CUDA lazily, which costs ~1 ms per call.)
    saved = torch.default_generator.get_state()
    torch.default_generator.manual_seed(int(rng.integers(2**62)))
    try:
        for clip_frames, clip_index in zip(frames, indices):
            views = transform(clip_frames)
            views = views if isinstance(views, list) else [views]
            clips.extend(views)
            clip_indices.extend([clip_index] * len(views))
    finally:
        torch.default_generator.set_state(saved)
    return clips, torch.from_numpy(np.stack(clip_indices))
