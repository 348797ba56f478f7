"""Cut one video into segments: stream copy at key frames, or re-encoded to H.264 at a fixed
frame rate and short side; with PyAV (bundled FFmpeg) or the ``ffmpeg`` command. A folder of
numbered frames (:mod:`harness.data.frame_folders`) is always encoded, by PyAV, at its frame
rate (``Settings.frame_fps``: a folder does not say) or ``Settings.fps``."""

from __future__ import annotations

import io
import itertools
import math
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from harness.core.errors import UserError


@dataclass(frozen=True)
class Settings:
    """How videos are cut and encoded (saved in every manifest)."""

    segment_seconds: float = 10.0
    min_seconds: float = 1.0
    fps: float | None = None
    short_side: int | None = None
    shard_size_mb: float = 256.0
    seed: int = 0
    shard_samples: int | None = None  #: also cut a shard at this many samples
    cutter: str = "auto"  #: auto | pyav | ffmpeg (see ``pick_cutter``)
    frame_fps: float | None = None  #: frame rate of frame-folder inputs (None: unknown; they cannot be cut then)

    @property
    def reencode(self) -> bool:
        return self.fps is not None or self.short_side is not None


def probe(path: str | io.BytesIO) -> tuple[float, float, int, tuple[int, int]]:
    """(duration s, fps, frames, (width, height)) of a video file or of mp4 bytes in memory."""
    import av  # (PyAV: imported where used, so that --help stays fast)

    with av.open(path) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 30)
        frames = stream.frames or 0
        duration = float(stream.duration * stream.time_base) if stream.duration else 0.0
        if not duration and container.duration:
            duration = container.duration / 1e6
        if not frames:
            frames = sum(1 for _ in container.demux(stream) if _.size)
        if not duration:
            duration = frames / fps
        return duration, fps, frames, (stream.codec_context.width, stream.codec_context.height)


def probe_frame_folder(path: str, frame_fps: float | None) -> tuple[float, float, int, tuple[int, int]]:
    """(duration s, fps, frames, (width, height)) of a folder of numbered frames read at ``frame_fps``
    (one listing of the folder and one frame's header).

    Raises:
        DecodeError: not a readable frame folder. ValueError: no frame rate was given.
    """
    from harness.data.frame_folders import FrameFolderReader  # (torch: imported where used, as av is)

    if not frame_fps:
        raise ValueError("a frame folder has no frame rate of its own: give --frame-fps")
    reader = FrameFolderReader(path, frame_fps)
    height, width = reader.frame_size()
    return reader.num_frames / reader.fps, reader.fps, reader.num_frames, (width, height)


def _cut_copy(path: str, settings: Settings) -> list[tuple[bytes, float, float, int]]:
    """Stream-copy segments, cut at the first key frame after each boundary."""
    import av  # (PyAV: imported where used, so that --help stays fast)

    segments: list[tuple[bytes, float, float, int]] = []
    with av.open(path) as source:
        stream = source.streams.video[0]
        buffer, output, out_stream, first, start, frames = None, None, None, None, 0.0, 0

        def close(end: float) -> None:
            if output is not None:
                output.close()
                segments.append((buffer.getvalue(), start, end, frames))

        for packet in source.demux(stream):
            if packet.dts is None or packet.size == 0:
                continue
            time = float(packet.pts * stream.time_base) if packet.pts is not None else 0.0
            if output is None or (packet.is_keyframe and time >= start + settings.segment_seconds):
                close(time)
                buffer = io.BytesIO()
                output = av.open(buffer, "w", format="mp4")
                out_stream = output.add_stream_from_template(stream)
                first, start, frames = packet.dts, time, 0
            offset = first
            packet.dts -= offset
            packet.pts = packet.pts - offset if packet.pts is not None else None
            packet.stream = out_stream
            output.mux(packet)
            frames += 1
        close(start + frames / float(stream.average_rate or 30))
    return segments


def _cut_encode(path: str, settings: Settings, window: tuple[float, float] | None = None,
                ) -> list[tuple[bytes, float, float, int]]:  # fmt: skip
    """Decode, resample to ``fps``, resize the short side, encode H.264 segments; of the frames
    whose time lies in ``window`` (seconds, ``[start, end)``) only, when given: the decoder seeks
    to the key frame before its start and stops at its end."""
    import av  # (PyAV: imported where used, so that --help stays fast)

    first, last = window if window is not None else (0.0, math.inf)
    with av.open(path) as source:
        stream = source.streams.video[0]
        if first > 0:
            source.seek(int(first / stream.time_base) + (stream.start_time or 0), stream=stream, backward=True)
        # a window's times count from the first frame, as the training reader counts frames (a stream
        # may start late: MKV/WebM offsets, MP4 edit lists)
        offset = float(stream.start_time * stream.time_base) if window is not None and stream.start_time else 0.0
        decoded = ((float(frame.time or 0.0) - offset, frame) for frame in source.decode(stream))
        frames = ((time, lambda frame=frame: frame) for time, frame in
                  itertools.takewhile(lambda pair: pair[0] < last - 1e-6, decoded) if time >= first - 1e-6)  # fmt: skip
        fps = settings.fps or float(stream.average_rate or 30)
        return _encode_segments(frames, fps, settings, math.ceil(first * fps - 1e-6))


def _cut_frame_folder(path: str, settings: Settings, window: tuple[float, float] | None = None,
                      ) -> list[tuple[bytes, float, float, int]]:  # fmt: skip
    """Encode a folder of numbered frames at ``settings.frame_fps`` into H.264 segments (resampled
    to ``settings.fps`` and resized when asked, as a video is); of ``window`` (seconds) only."""
    import av  # (PyAV: imported where used, so that --help stays fast)
    import numpy as np

    from harness.data.frame_folders import FrameFolderReader

    if not settings.frame_fps:
        raise ValueError("a frame folder has no frame rate of its own: give --frame-fps")
    reader = FrameFolderReader(path, settings.frame_fps)

    def frame(index: int):
        array = reader.get_frames(np.array([index]))[0].numpy()
        return av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")

    # Each frame is decoded only if it is kept: a lower --fps reads that many fewer files.
    first, last = window if window is not None else (0.0, reader.num_frames / reader.fps)
    numbers = range(math.ceil(first * reader.fps - 1e-6), min(reader.num_frames, math.ceil(last * reader.fps - 1e-6)))
    frames = ((index / reader.fps, lambda index=index: frame(index)) for index in numbers)
    fps = settings.fps or reader.fps
    return _encode_segments(frames, fps, settings, math.ceil(first * fps - 1e-6))


def _encode_segments(frames, fps: float, settings: Settings, first_index: int = 0,
                     ) -> list[tuple[bytes, float, float, int]]:  # fmt: skip
    """Encode ``(time s, make frame)`` pairs (``make()`` -> an ``av.VideoFrame``, called only for
    the frames kept) into H.264 segments of ``settings.segment_seconds`` at ``fps``, the short side
    resized to ``settings.short_side`` when set (sides rounded to even: yuv420p needs them).
    ``first_index``: the output frame (at ``fps``) the first pair is due at (a window's start)."""
    import av  # (PyAV: imported where used, so that --help stays fast)

    segments: list[tuple[bytes, float, float, int]] = []
    per_segment = max(1, int(round(settings.segment_seconds * fps)))
    state = {"output": None, "frames": 0, "next_index": first_index, "start": 0.0}

    def close() -> None:
        if state["output"] is not None:
            for packet in state["out_stream"].encode():
                state["output"].mux(packet)
            state["output"].close()
            start = state["start"]
            segments.append((state["buffer"].getvalue(), start, start + state["frames"] / fps, state["frames"]))
            state["output"] = None

    for time, make in frames:
        if time * fps + 1e-6 < state["next_index"]:
            continue  # drop frames to reach the target rate
        state["next_index"] += 1
        frame = make()
        width, height = frame.width, frame.height
        if settings.short_side:
            scale = settings.short_side / min(width, height)
            width, height = 2 * round(width * scale / 2), 2 * round(height * scale / 2)
        else:
            width, height = max(2, width - width % 2), max(2, height - height % 2)
        if state["output"] is None:
            state["buffer"] = io.BytesIO()
            state["output"] = av.open(state["buffer"], "w", format="mp4")
            rate = Fraction(fps).limit_denominator(1001)
            out = state["output"].add_stream("libx264", rate=rate)
            out.width, out.height, out.pix_fmt = width, height, "yuv420p"
            out.options = {"crf": "20", "g": str(max(1, int(fps)))}
            state.update(out_stream=out, frames=0, start=time)
        image = frame.reformat(width=width, height=height, format="yuv420p")
        image.pts, image.time_base = state["frames"], 1 / state["out_stream"].codec_context.framerate
        for packet in state["out_stream"].encode(image):
            state["output"].mux(packet)
        state["frames"] += 1
        if state["frames"] >= per_segment:
            close()
    close()
    return segments


def _cut_ffmpeg(path: str, settings: Settings) -> list[tuple[bytes, float, float, int]]:
    """Cut (and re-encode, when asked) with the ``ffmpeg`` command's segment muxer.

    Re-encoding forces a key frame at every segment boundary, so segments are exactly
    ``segment_seconds`` long; stream copy cuts at the first key frame after each boundary.
    """
    if settings.reencode:
        filters = []
        if settings.fps:
            filters.append(f"fps={settings.fps}")
        if settings.short_side:
            side = settings.short_side
            filters.append(f"scale='if(lt(iw,ih),{side},-2)':'if(lt(iw,ih),-2,{side})'")
        gop = str(max(1, int(settings.fps or 30)))
        codec = ["-c:v", "libx264", "-crf", "20", "-g", gop, "-pix_fmt", "yuv420p",
                 "-force_key_frames", f"expr:gte(t,n_forced*{settings.segment_seconds})"]  # fmt: skip
        codec += ["-vf", ",".join(filters)] if filters else []
    else:
        codec = ["-c", "copy"]
    with tempfile.TemporaryDirectory(prefix="harness-cut-") as folder:
        listing = Path(folder) / "segments.csv"
        command = ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", path, "-map", "0:v:0", "-an", *codec,
                   "-f", "segment", "-segment_time", str(settings.segment_seconds), "-reset_timestamps", "1",
                   "-segment_list", str(listing), "-segment_list_type", "csv", f"{folder}/%06d.mp4"]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            lines = result.stderr.strip().splitlines() or [f"exit code {result.returncode}"]
            raise RuntimeError(f"ffmpeg failed: {lines[-1]}")
        segments, start = [], 0.0
        for line in listing.read_text().splitlines():  # its times carry the B-frame delay: not used
            data = (Path(folder) / line.rsplit(",", 2)[0]).read_bytes()
            _, clip_fps, frames, _ = probe(io.BytesIO(data))
            rate = settings.fps or clip_fps
            segments.append((data, start, start + frames / rate, frames))
            start += frames / rate
    return segments


def pick_cutter(settings: Settings) -> str:
    """``pyav`` or ``ffmpeg`` for these settings (``auto`` is PyAV).

    Measured (bench/bench_shards.py, bench/RESULTS.md): re-encoding camera-like content runs at
    the same speed either way (libx264 dominates: 0.9-1.08x), and stream copy through the
    ``ffmpeg`` command is 3-4x slower (a process per video). The command stays available for
    inputs or encoders that only a system FFmpeg build has.
    """
    if settings.cutter == "ffmpeg" and shutil.which("ffmpeg") is None:
        raise UserError("--cutter ffmpeg needs the ffmpeg command on the PATH (or use --cutter pyav)")
    return "pyav" if settings.cutter == "auto" else settings.cutter


def cut_window(path: str, start: float, end: float, settings: Settings) -> list[tuple[bytes, float, float, int]]:
    """:func:`cut_segments` of the part ``[start, end)`` (seconds) of a video: a listing line's
    segment. Always re-encoded (at ``settings.fps`` or the video's rate), so that the clips begin
    and end where the segment does, not at the nearest key frames."""
    if os.path.isdir(path):
        return _cut_frame_folder(path, settings, (start, end))
    return _cut_encode(path, settings, (start, end))


def cut_segments(path: str, settings: Settings) -> list[tuple[bytes, float, float, int]]:
    """``(mp4 bytes, start s, end s, frames)`` of each segment of one video, or of a folder of
    numbered frames (``prepare`` has checked ``settings.cutter`` once with :func:`pick_cutter`)."""
    if os.path.isdir(path):  # (whatever the cutter: the ffmpeg command cannot read our frame order)
        return _cut_frame_folder(path, settings)
    if settings.cutter == "ffmpeg":
        return _cut_ffmpeg(path, settings)
    return _cut_encode(path, settings) if settings.reencode else _cut_copy(path, settings)
