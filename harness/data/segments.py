"""Segments of videos: a listing line's ``start end`` (seconds or frames), the frames it covers,
and how outputs name it (``path#t=1.5,4``, a media fragment; ``path#frames=10,50``). No torch
import: ``prepare`` and the listing tools use it too.
"""

from __future__ import annotations

import math
import re

from harness.data.errors import DecodeError


def segment_frames(segment: tuple[float, float], unit: str, fps: float, num_frames: int) -> tuple[int, int]:
    """The frames ``[first, end)`` of a segment: in frames, as given; in seconds, the frames whose
    time ``index / fps`` lies in ``[start, end)`` (at least one). The end is cut to the video's.

    Raises:
        DecodeError: a segment in seconds of a video without a frame rate, or one that starts
            after the video ends.
    """
    start, end = segment
    if unit == "frames":
        first, last = int(start), int(end)
        where = f"frame {first}"
    else:
        if not fps or fps <= 0:
            raise DecodeError("a segment in seconds needs the video's frame rate, which is unknown")
        # ceil, with a little slack: a start of 1.5 s at 30 fps is frame 45 even if 1.5 * 30 = 44.9999
        first, last = math.ceil(start * fps - 1e-6), math.ceil(end * fps - 1e-6)
        where = f"{start:g} s"
    if first >= num_frames:
        length = f"{num_frames} frames" + (f", {num_frames / fps:.3f} s" if fps else "")
        raise DecodeError(f"the segment starts at {where}, after the video's end ({length})")
    return first, min(max(last, first + 1), num_frames)


SEGMENT_NAME = re.compile(r"^(.+)#(t|frames)=([0-9.eE+-]+),([0-9.eE+-]+)$")


def split_segment_name(name: str) -> tuple[str, tuple[float, float] | None, str]:
    """``(path, segment, unit)`` of a :func:`segment_name` (a plain path: ``(path, None, "seconds")``)."""
    match = SEGMENT_NAME.match(name) if "#" in name else None
    if match is None:
        return name, None, "seconds"
    try:
        segment = (float(match[3]), float(match[4]))
    except ValueError:
        return name, None, "seconds"
    return match[1], segment, "frames" if match[2] == "frames" else "seconds"


def segment_name(path: str, segment: tuple[float, float] | None, unit: str = "seconds") -> str:
    """How a segment is named in outputs: ``path#t=1.5,4`` (seconds, as a media fragment) or
    ``path#frames=10,50``; the path alone for a whole video."""
    if segment is None:
        return path
    start, end = segment
    if unit == "frames":
        return f"{path}#frames={int(start)},{int(end)}"
    return f"{path}#t={_seconds(start)},{_seconds(end)}"


def _seconds(value: float) -> str:
    """A time as the shortest text that reads back as the same float (``1.5``, ``4``, ``3723.456``):
    predict, embed and prepare read a segment back from its name, and must cut the same frames."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text
