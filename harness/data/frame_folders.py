"""A folder of numbered frames read as a video (EPIC-KITCHENS' ``rgb_frames/P01_01/frame_0000000001.jpg``,
SSv2 copies' ``12345/00001.jpg``): :func:`harness.data.decode.open_video` hands a directory here.

The frames are the folder's image files (:data:`IMAGE_EXTENSIONS`) whose name (without its
extension) holds a number, ordered by the last number in the name, numerically: ``frame_2``
before ``frame_10``, and ``1.jpg`` before ``0002.jpg``. Gaps in the numbering are fine (frames are
counted, not numbered). The folder is listed once per open, by name only (``os.scandir``, no
``stat`` per file), and only the frames a clip asks for are read: a 100k-frame folder costs one
listing and a sort of its numbers per open, never a read of every file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable

import numpy as np
import torch

from harness.data.frame_decode import IMAGE_EXTENSIONS, DecodeError, decode_image, gather_frames

#: the last run of digits in a file name without its extension: the frame's number
_LAST_NUMBER = re.compile(r"(\d+)\D*$")


def frame_number(name: str) -> int | None:
    """The frame number of a file name: the last number in an image file's name without its
    extension (``frame_0000000010.jpg`` -> 10); None for other files, images without a number and
    hidden files (macOS's ``._frame_0000000010.jpg`` beside each frame copied from a Mac)."""
    if name.startswith("."):
        return None
    stem, dot, extension = name.rpartition(".")
    if not dot or extension.lower() not in IMAGE_EXTENSIONS:
        return None
    match = _LAST_NUMBER.search(stem)
    return int(match.group(1)) if match is not None else None


def frame_names(names: Iterable[str]) -> list[str]:
    """The numbered image files among ``names`` (file names of one folder), in frame order (the
    last number in the name, numerically; names without a number are not frames).

    Raises:
        DecodeError: two files carry the same number (``img_00001.jpg`` and ``flow_x_00001.jpg``:
            two kinds of frame in one folder, which no order can interleave correctly).
    """
    names = list(names)
    uniform = _uniform_order(names)
    if uniform is not None:
        return uniform
    numbers, kept = [], []
    for name in names:
        number = frame_number(name)
        if number is not None:
            numbers.append(number)
            kept.append(name)
    try:
        keys = np.array(numbers, dtype=np.int64)
    except OverflowError:  # a number of 20+ digits: compare Python integers instead
        keys = np.array(numbers, dtype=object)
    order = np.argsort(keys, kind="stable")
    same = np.flatnonzero(keys[order][1:] == keys[order][:-1]) if len(order) > 1 else []
    if len(same):
        first, second = kept[order[same[0]]], kept[order[same[0] + 1]]
        raise DecodeError(f"two frames are numbered {numbers[order[same[0]]]} ({first}, {second}): keep one kind "
                          "of frame per folder")  # fmt: skip
    return [kept[i] for i in order]


def _uniform_order(names: list[str]) -> list[str] | None:
    """The frame order of ``names`` when every one follows the first one's pattern with a number of
    the same width (``frame_0000000001.jpg``...: zero-padded, as extracted datasets are): their text
    order, which is then their numeric order, found 3-5x faster than parsing each number. None when
    they do not (then :func:`frame_names` parses them)."""
    if not names or frame_number(names[0]) is None:
        return None
    first = names[0]
    match = _LAST_NUMBER.search(first.rpartition(".")[0])  # the last run of digits: a non-digit precedes it
    start, end, width = match.start(1), match.end(1), len(first)
    prefix, suffix = first[:start], first[end:]
    for name in names:
        same = len(name) == width and name.startswith(prefix) and name.endswith(suffix)
        if not (same and name[start:end].isdecimal()):
            return None
    return sorted(names)


def list_frames(folder: str) -> list[str]:
    """The frame files of ``folder`` in order (see :func:`frame_names`), listed once by name.

    Raises:
        DecodeError: naming the folder: it cannot be listed, holds no numbered image, or holds two
            frames with the same number.
    """
    try:
        with os.scandir(folder) as entries:
            names = [entry.name for entry in entries]  # names only: no stat per file
    except OSError as error:
        raise DecodeError(f"cannot list frame folder {folder}: {error}") from error
    try:
        frames = frame_names(names)
    except DecodeError as error:
        raise DecodeError(f"frame folder {folder}: {error}") from None
    if not frames:
        what = "is empty" if not names else f"holds no numbered image ({', '.join(IMAGE_EXTENSIONS)})"
        raise DecodeError(f"frame folder {folder} {what}")
    return frames


class FrameFolderReader:
    """A folder of numbered frames as a video (the :class:`harness.data.decode.VideoReader` protocol).

    Args:
        folder: the folder's path.
        fps: its frame rate (a folder does not say): None or 0 when unknown, which ``frame_step``
            sampling does not need and ``fps`` / ``duration`` sampling refuses.
        scale: ``scale(height, width)`` -> the size wanted, or None (full size); JPEG frames then
            decode at 1/2, 1/4 or 1/8 scale (DCT scaling, never below it), as single images do.

    Every frame must have the first frame's size (checked from each file's header when it is read).
    """

    def __init__(self, folder: str, fps: float | None = None,
                 scale: Callable[[int, int], tuple[int, int] | None] | None = None) -> None:  # fmt: skip
        self.folder = folder
        self._names = list_frames(folder)
        self.num_frames = len(self._names)
        self.fps = float(fps) if fps and fps > 0 else 0.0
        self._scale = scale
        self._size: tuple[int, int] | None = None

    def frame_path(self, index: int) -> str:
        """The file of frame ``index`` (0-based, in frame order)."""
        return os.path.join(self.folder, self._names[index])

    def frame_size(self) -> tuple[int, int]:
        """``(height, width)`` of the first frame, from its header (what every frame must have)."""
        if self._size is None:
            from PIL import Image

            path = self.frame_path(0)
            try:
                with Image.open(path) as image:
                    self._size = (image.height, image.width)
            except Exception as error:  # Pillow raises OSError, SyntaxError, ValueError... for broken files
                raise DecodeError(f"cannot decode frame {path}: {error}") from error
        return self._size

    def _decode(self, index: int) -> np.ndarray:
        path = self.frame_path(index)
        try:
            return decode_image(path, self._scale, self.frame_size())
        except DecodeError as error:
            raise DecodeError(f"frame {path}: {error}") from None
        except Exception as error:
            raise DecodeError(f"cannot decode frame {path}: {error}") from error

    def get_frames(self, indices: np.ndarray) -> torch.Tensor:
        """Frames ``indices`` as ``uint8 [N, H, W, 3]``; each distinct frame file is read once."""
        unique = np.unique(indices)
        if unique[0] < 0 or unique[-1] >= self.num_frames:
            raise DecodeError(f"frame folder {self.folder}: frames {unique[0]}..{unique[-1]} asked of "
                              f"{self.num_frames}")  # fmt: skip
        frames = [self._decode(int(index)) for index in unique]
        if len({frame.shape for frame in frames}) > 1:  # JPEG scaled by its DCT next to a PNG at full size
            raise DecodeError(f"frame folder {self.folder}: its frames decode to different sizes (JPEG and "
                              "other formats mixed, decoded smaller); keep one format per folder")  # fmt: skip
        return gather_frames(torch.from_numpy(np.stack(frames)), unique, indices)

    def close(self) -> None:
        """Nothing stays open between reads; forget the listing."""
        self._names = []
