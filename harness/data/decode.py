"""Video decoders behind one small interface: decord, PyAV and torchcodec; and still images.

``open_video(source, backend)`` returns a reader with ``num_frames``, ``fps`` and
``get_frames(indices) -> uint8 [N, H, W, 3]``. ``source`` is a path or the bytes of a file (a
tar member), decoded in memory without temporary files. All backends return identical RGB
frames for constant-frame-rate files (tested). Readers must be opened inside the DataLoader
worker that uses them: decord deadlocks when a reader created in the parent crosses a fork.

A still image (:data:`IMAGE_EXTENSIONS`, told by the file's extension) opens as a 1-frame video
with no frame rate (:class:`_ImageReader`, Pillow), so listings and shards of images go through
the same clip sampling, transforms and bad-sample policy as videos. A directory opens as a folder
of numbered frames (:class:`harness.data.frame_folders.FrameFolderReader`).
"""

from __future__ import annotations

import functools
import io
import logging
import os
from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch

from harness.data.frame_decode import (  # noqa: F401  (IMAGE_EXTENSIONS, DecodeError, is_image: re-exported)
    IMAGE_EXTENSIONS,
    DecodeError,
    decode_image,
    gather_frames,
    is_image,
)
from harness.data.frame_folders import FrameFolderReader

BACKENDS = ("torchcodec", "decord", "pyav")
#: tries to open a video before it counts as bad: a transient error gets one retry (torchcodec once
#: failed on a good 720p file with "the JSON object must be str, bytes or bytearray, not tuple": its
#: metadata op handed back a malformed result; the same file opened at the next try)
OPEN_ATTEMPTS = 2
log = logging.getLogger(__name__)


class VideoReader(Protocol):
    """An open video. ``get_frames`` returns ``uint8`` RGB frames ``[N, H, W, 3]``."""

    num_frames: int
    fps: float

    def get_frames(self, indices: np.ndarray) -> torch.Tensor: ...

    def close(self) -> None: ...


def source_size(source: str | bytes) -> tuple[int, int]:
    """``(height, width)`` of a video's first video stream, from its header (PyAV; a few ms)."""
    import av

    with av.open(io.BytesIO(source) if isinstance(source, bytes) else source) as container:
        if not container.streams.video:
            raise DecodeError("no video stream")
        context = container.streams.video[0].codec_context
        return int(context.height), int(context.width)


@functools.cache
def scaling_supported(backend: str) -> bool:
    """Whether ``backend`` can scale while converting to RGB (torchcodec from 0.9: decoder transforms)."""
    if backend != "torchcodec":
        return True
    try:
        from torchcodec.transforms import Resize  # noqa: F401
    except ImportError:
        return False
    return True


class _TorchcodecReader:
    """torchcodec's decoder. ``partial``: only a part of the file is wanted (a segment), so it is
    opened in torchcodec's approximate seek mode, which takes the frame count and rate from the
    header instead of scanning the whole file (bench/bench_segments.py: 2.5x faster on a 10-minute
    file; a one-hour 1080p file's scan reads all of it); where the header lacks them,
    it is opened exactly, as whole videos are. Both give the same frames of a constant-rate file."""

    def __init__(self, source: str | bytes, threads: int, size: tuple[int, int] | None = None,
                 partial: bool = False) -> None:  # fmt: skip
        from torchcodec.decoders import VideoDecoder

        options = {}
        if size is not None:
            from torchcodec.transforms import Resize  # bilinear, antialiased, in FFmpeg's colour conversion

            options["transforms"] = [Resize(size)]
        self.seek_mode = "approximate" if partial else "exact"
        self._decoder = VideoDecoder(source, dimension_order="NHWC", num_ffmpeg_threads=threads,
                                     seek_mode=self.seek_mode, **options)  # fmt: skip
        meta = self._decoder.metadata
        if partial and not (meta.num_frames and meta.average_fps):  # the header does not say: scan it
            self.seek_mode = "exact"
            self._decoder = VideoDecoder(source, dimension_order="NHWC", num_ffmpeg_threads=threads,
                                         seek_mode="exact", **options)  # fmt: skip
            meta = self._decoder.metadata
        self.num_frames = int(meta.num_frames or 0)
        self.fps = float(meta.average_fps or 0.0)

    def get_frames(self, indices: np.ndarray) -> torch.Tensor:
        unique = np.unique(indices)
        frames = self._decoder.get_frames_at(indices=unique.tolist()).data
        return gather_frames(frames, unique, indices)

    def close(self) -> None:
        self._decoder = None


class _DecordReader:
    """decord 0.6 reader. Known upstream bug: some frame widths (seen: 48 and 72 px) fail with
    "DECORDArrayCopyFromTo: The size must exactly match"; that surfaces as a DecodeError."""

    def __init__(self, source: str | bytes, threads: int, size: tuple[int, int] | None = None) -> None:
        import decord

        handle = io.BytesIO(source) if isinstance(source, bytes) else source
        height, width = size if size is not None else (-1, -1)  # decord scales in its colour conversion
        self._reader = decord.VideoReader(handle, ctx=decord.cpu(0), num_threads=threads, width=width, height=height)
        self.num_frames = len(self._reader)
        self.fps = float(self._reader.get_avg_fps())

    def get_frames(self, indices: np.ndarray) -> torch.Tensor:
        unique = np.unique(indices)
        frames = torch.from_numpy(self._reader.get_batch(unique.tolist()).asnumpy())
        return gather_frames(frames, unique, indices)

    def close(self) -> None:
        self._reader = None


class _PyAVReader:
    """PyAV reader that seeks to the keyframe before the first wanted frame, then decodes forward.

    Frame numbers come from presentation timestamps (``pts * time_base * fps``), which is
    exact for constant-frame-rate video, the case all backends agree on.
    """

    def __init__(self, source: str | bytes, threads: int, size: tuple[int, int] | None = None) -> None:
        import av

        self._size = size  # (height, width): swscale scales while converting to RGB
        self._container = av.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        if not self._container.streams.video:
            raise DecodeError("no video stream")
        self._stream = self._container.streams.video[0]
        self._stream.thread_count = threads
        rate = self._stream.average_rate or self._stream.guessed_rate
        self.fps = float(rate) if rate else 0.0
        self._start = self._stream.start_time or 0
        self.num_frames = int(self._stream.frames) or self._count_frames()
        self.decoded = 0  #: frames decoded so far (a segment late in a long video must not cost them all)

    def _count_frames(self) -> int:
        count = sum(1 for packet in self._container.demux(self._stream) if packet.size)
        self._container.seek(0)
        return count

    def _frame_number(self, frame) -> int:
        return round(float((frame.pts - self._start) * self._stream.time_base) * self.fps)

    def _decode_from(self, first: int, wanted: set[int], last: int) -> dict[int, np.ndarray]:
        timestamp = self._start + int(first / self.fps / self._stream.time_base) if first else self._start
        self._container.seek(timestamp, stream=self._stream, backward=True, any_frame=False)
        found: dict[int, np.ndarray] = {}
        for position, frame in enumerate(self._container.decode(self._stream)):
            self.decoded += 1
            number = self._frame_number(frame) if frame.pts is not None else position
            if position == 0 and number > first:
                return {}  # the seek overshot: caller decodes from the start
            if number in wanted:
                if self._size is None:
                    found[number] = frame.to_ndarray(format="rgb24")
                else:
                    height, width = self._size
                    found[number] = frame.to_ndarray(format="rgb24", width=width, height=height,
                                                     interpolation="BILINEAR")  # fmt: skip
            if number >= last:
                break
        return found

    def get_frames(self, indices: np.ndarray) -> torch.Tensor:
        unique = np.unique(indices)
        wanted = set(unique.tolist())
        first, last = int(unique[0]), int(unique[-1])
        found = self._decode_from(first, wanted, last) or self._decode_from(0, wanted, last)
        if not found:
            raise DecodeError(f"no frames decoded for indices {first}..{last}")
        # A header may promise a few more frames than the stream holds: repeat the last one.
        frames, previous = [], None
        for number in unique.tolist():
            previous = found.get(number, previous)
            if previous is None:
                raise DecodeError(f"frame {number} could not be decoded")
            frames.append(previous)
        return gather_frames(torch.from_numpy(np.stack(frames)), unique, indices)

    def close(self) -> None:
        self._container.close()


class _ImageReader:
    """A still image as a 1-frame video (``fps`` 0: it has no frame rate), decoded by Pillow.

    Why Pillow and not ``torchvision.io.decode_image``: it reads all of jpg/png/webp/bmp (torchvision
    has no BMP), its JPEG decoding is libjpeg-turbo's (the same pixels), it is already a requirement,
    and torchvision 0.29 deprecates its image codecs with a warning at every call. The file's own
    bytes decide the format (a PNG named ``.jpg`` reads). The first frame of an animated file is
    taken; EXIF orientation is not applied (as V-JEPA 2's and torchvision's image folders read).
    """

    num_frames = 1
    fps = 0.0

    def __init__(self, source: str | bytes, size: Callable[[int, int], tuple[int, int] | None] | None) -> None:
        self._frame = torch.from_numpy(decode_image(source, size))  # [H, W, 3] uint8

    def get_frames(self, indices: np.ndarray) -> torch.Tensor:
        return self._frame.expand(len(indices), *self._frame.shape)  # every index is the one frame

    def close(self) -> None:
        self._frame = None


def open_image(source: str | bytes, scale: Callable[[int, int], tuple[int, int] | None] | None = None) -> _ImageReader:
    """Open a still image (path or file bytes) as a 1-frame reader; ``scale`` as :func:`open_video`
    (JPEG only: other formats decode at full size).

    Raises:
        DecodeError: missing, empty, truncated or not an image of a format Pillow reads.
    """
    if isinstance(source, (bytes, bytearray)) and len(source) == 0:
        raise DecodeError("empty image bytes")
    try:
        return _ImageReader(bytes(source) if isinstance(source, bytearray) else source, scale)
    except Exception as error:  # Pillow raises OSError, SyntaxError, ValueError... for missing or broken files
        raise DecodeError(f"cannot decode image: {error}") from error


_READERS = {"torchcodec": _TorchcodecReader, "decord": _DecordReader, "pyav": _PyAVReader}


@functools.cache
def backend_available(backend: str) -> bool:
    """Whether ``backend`` imports and can decode here (torchcodec needs system FFmpeg libs)."""
    try:
        if backend == "torchcodec":
            from torchcodec.decoders import VideoDecoder  # noqa: F401  (loads the FFmpeg libs)
        elif backend == "decord":
            import decord  # noqa: F401
        elif backend == "pyav":
            import av  # noqa: F401
        else:
            return False
    except Exception:  # a missing FFmpeg shared library raises RuntimeError/OSError, not ImportError
        return False
    return True


def resolve_backend(backend: str = "auto") -> str:
    """Map ``auto`` to the fastest available backend (torchcodec, then decord, then PyAV)."""
    if backend == "auto":
        for candidate in BACKENDS:
            if backend_available(candidate):
                return candidate
        raise DecodeError("no video decoder available: pip install av (or decord, torchcodec)")
    if backend not in _READERS:
        raise ValueError(f"unknown decoder {backend!r}; choose one of auto, {', '.join(BACKENDS)}")
    if not backend_available(backend):
        raise DecodeError(f"decoder {backend!r} is not installed or cannot load its libraries")
    return backend


def open_video(source: str | bytes, backend: str = "auto", threads: int = 1,
               scale: Callable[[int, int], tuple[int, int] | None] | None = None,
               image: bool | None = None, fps: float | None = None, partial: bool = False) -> VideoReader:  # fmt: skip
    """Open a video file path or in-memory file bytes. ``scale(height, width)`` gives the size to
    decode frames at (None: as they are); the decoder then scales while converting to RGB, so
    full-size RGB frames are never made (where the decoder cannot, frames stay full size).
    ``image``: the source is a still image, opened as a 1-frame video (:func:`open_image`); None:
    a path with an image extension (:func:`is_image`) is one, bytes are a video. A path to a
    directory is a folder of numbered frames (:class:`FrameFolderReader`, whatever ``backend``),
    whose frame rate is ``fps`` (None or 0: unknown); ``fps`` is ignored for other sources, which
    carry their own rate. ``partial``: only part of the video will be read (a segment); torchcodec
    then opens it without scanning the whole file where its header allows (:class:`_TorchcodecReader`).

    Raises:
        DecodeError: the source is missing, empty, not a video, or has no frames.
    """
    if image or (image is None and isinstance(source, str) and is_image(source)):
        return open_image(source, scale)
    if isinstance(source, str) and os.path.isdir(source):  # one stat, in the worker: never one per listing line
        return FrameFolderReader(source, fps, scale)
    if isinstance(source, (bytes, bytearray)) and len(source) == 0:
        raise DecodeError("empty video bytes")
    name = resolve_backend(backend)
    source = bytes(source) if isinstance(source, bytearray) else source
    for attempt in range(1, OPEN_ATTEMPTS + 1):
        try:
            reader = _open_once(name, source, threads, scale, partial)
            break
        except DecodeError:
            raise
        except Exception as error:  # each library raises its own types for unreadable files
            if attempt == OPEN_ATTEMPTS:
                tries = f" (tried {attempt} times)" if attempt > 1 else ""
                raise DecodeError(f"{name} cannot open video{tries}: {error}") from error
            failed = f"{type(error).__name__}: {error}"
    if attempt > 1:
        where = source if isinstance(source, str) else f"a video of {len(source)} bytes"
        log.warning("%s opened %s at try %d; the first failed with %s", name, where, attempt, failed)
    if reader.num_frames < 1:
        raise DecodeError(f"{name}: video has no frames")
    return reader


def _open_once(name: str, source: str | bytes, threads: int, scale: Callable[[int, int], tuple[int, int] | None] | None,
               partial: bool = False) -> VideoReader:  # fmt: skip
    """One try at opening ``source`` with backend ``name`` (see :func:`open_video`)."""
    size = scale(*source_size(source)) if scale is not None and scaling_supported(name) else None
    if name == "torchcodec":
        return _TorchcodecReader(source, threads, size, partial)
    return _READERS[name](source, threads, size)


def read_clip_frames(reader: VideoReader, indices: np.ndarray) -> torch.Tensor:
    """Decode ``indices`` (any shape) from an open reader; returns ``uint8 [*indices.shape, H, W, 3]``."""
    flat = np.asarray(indices, dtype=np.int64).reshape(-1)
    try:
        frames = reader.get_frames(flat)
    except DecodeError:
        raise
    except Exception as error:
        raise DecodeError(f"decoding frames failed: {error}") from error
    return frames.reshape(*np.shape(indices), *frames.shape[1:])
