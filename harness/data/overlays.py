"""Heat-map overlays of where a model looked, drawn on the frames it saw: a PNG strip of frames, an
animated GIF or an MP4 (:mod:`harness.predict.explain` writes them for ``--explain``, the trackers
for ``logging.explain_videos``).

A heat map ``[T', H', W']`` on a token grid is upsampled bilinearly to the frames' size; frame
``t`` of ``T`` shows step ``t * T' // T`` (the tubelet it belongs to). The colours are relative:
``scale`` (by default the largest value of what is drawn together) is the brightest.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from harness.core.fileio import write_atomic

#: the colour map's anchors (dark purple -> red -> yellow, inferno-like), evenly spaced over [0, 1]
COLOUR_ANCHORS = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], np.float32)
#: how much of the colour covers the frame where the heat is 0 and where it is 1
ALPHA_RANGE = (0.15, 0.75)
#: the suffixes :func:`write_animation` writes
ANIMATION_SUFFIXES = (".gif", ".mp4")


def heat_colours(heat: np.ndarray) -> np.ndarray:
    """Colours ``float32 [..., 3]`` (0-255) of heat values in ``[0, 1]`` (clipped)."""
    position = np.clip(heat, 0.0, 1.0) * (len(COLOUR_ANCHORS) - 1)
    low = np.minimum(position.astype(int), len(COLOUR_ANCHORS) - 2)
    fraction = (position - low)[..., None]
    return COLOUR_ANCHORS[low] * (1 - fraction) + COLOUR_ANCHORS[low + 1] * fraction


def upsample(heat: np.ndarray, height: int, width: int) -> np.ndarray:
    """``[T', H', W']`` -> ``float32 [T', height, width]``, bilinear."""
    resized = [np.asarray(Image.fromarray(step.astype(np.float32)).resize((width, height), Image.Resampling.BILINEAR))
               for step in heat]  # fmt: skip
    return np.stack(resized)


def overlay_clip(frames: np.ndarray, heat: np.ndarray, scale: float | None = None) -> np.ndarray:
    """The frames ``uint8 [T, H, W, 3]`` with the heat map ``[T', H', W']`` drawn over them
    (``scale``: the heat shown brightest; by default the map's largest value)."""
    steps, frame_count = heat.shape[0], frames.shape[0]
    scale = float(heat.max()) if scale is None else scale
    heat = upsample(heat / max(scale, 1e-12), frames.shape[1], frames.shape[2])
    heat = np.clip(heat[[t * steps // frame_count for t in range(frame_count)]], 0.0, 1.0)
    alpha = (ALPHA_RANGE[0] + (ALPHA_RANGE[1] - ALPHA_RANGE[0]) * heat)[..., None]
    return (frames.astype(np.float32) * (1 - alpha) + heat_colours(heat) * alpha).round().astype(np.uint8)


def overlay_clips(clips: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """Every clip and view of one video, ``uint8 [clips, views, T, H, W, 3]``, with its heat map
    ``[clips, views, T', H', W']`` drawn over it, on one colour scale (the largest value)."""
    scale = float(heat.max())
    out = np.empty_like(clips)
    for clip in range(clips.shape[0]):
        for view in range(clips.shape[1]):
            out[clip, view] = overlay_clip(clips[clip, view], heat[clip, view], scale)
    return out


def overlay_video(frames: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """:func:`overlay_clips` of one video's clips as a batch holds them: ``uint8 [clips x views, 3,
    T, H, W]`` (clip-major, channels first) and the heat ``[clips, views, T', H', W']``."""
    clips, views = heat.shape[:2]
    grid = frames.reshape(clips, views, *frames.shape[1:]).transpose(0, 1, 3, 4, 5, 2)
    return overlay_clips(np.ascontiguousarray(grid), heat)


def strip_image(overlaid: np.ndarray) -> np.ndarray:
    """``[clips, views, T, H, W, 3]`` -> one image ``uint8 [clips x views x H, T x W, 3]``: a row of
    frames per clip and view (clip-major)."""
    clips, views, frames, height, width, _ = overlaid.shape
    return overlaid.reshape(clips * views, frames, height, width, 3).transpose(0, 2, 1, 3, 4).reshape(
        clips * views * height, frames * width, 3)  # fmt: skip


def animation_frames(overlaid: np.ndarray) -> np.ndarray:
    """``[clips, views, T, H, W, 3]`` -> ``uint8 [clips x T, H, views x W, 3]``: the clips one after
    the other, their views side by side."""
    clips, views, frames, height, width, _ = overlaid.shape
    return overlaid.transpose(0, 2, 3, 1, 4, 5).reshape(clips * frames, height, views * width, 3)


def write_strip(path: str | Path, overlaid: np.ndarray) -> None:
    """:func:`strip_image` of ``[clips, views, T, H, W, 3]`` as a PNG."""
    image = Image.fromarray(strip_image(overlaid))
    write_atomic(path, lambda handle: image.save(handle, format="PNG"))  # whole or not at all


def write_animation(path: str | Path, frames: np.ndarray, fps: float = 8.0) -> None:
    """Frames ``uint8 [N, H, W, 3]`` as an animated GIF (Pillow, looping; a frame equal to the one
    before is stored once, shown for longer) or an H.264 MP4 (PyAV; an odd height or width is padded
    by one black row or column), by ``path``'s suffix."""
    suffix = Path(path).suffix.lower()
    if suffix == ".gif":
        images = [Image.fromarray(frame) for frame in frames]
        write_atomic(path, lambda handle: images[0].save(handle, format="GIF", save_all=True, append_images=images[1:],
                                                         duration=round(1000 / fps), loop=0))  # fmt: skip
    elif suffix == ".mp4":
        from harness.data.synthetic import write_video

        pad = ((0, 0), (0, frames.shape[1] % 2), (0, frames.shape[2] % 2), (0, 0))
        temporary = Path(path).with_name(f".tmp-{os.getpid()}-{Path(path).name}")  # the muxer wants a path
        try:
            write_video(temporary, np.pad(frames, pad), fps=fps)
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
    else:
        raise ValueError(f"{path}: an animation is a {' or '.join(ANIMATION_SUFFIXES)} file")
