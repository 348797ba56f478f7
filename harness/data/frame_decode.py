"""What every frame reader shares: the decode error, which files are still images, decoding one
image with Pillow, and expanding frames decoded once per index back to the order asked for.

Here, below both :mod:`harness.data.decode` (video files, single images) and
:mod:`harness.data.frame_folders` (folders of numbered frames), so that ``decode.open_video`` can
hand a folder to the frame-folder reader without an import circle.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import torch

# torch-free homes of these (prepare and the listing tools use them), re-exported
from harness.data.errors import DecodeError
from harness.data.media import IMAGE_EXTENSIONS, is_image

__all__ = ["IMAGE_EXTENSIONS", "DecodeError", "decode_image", "gather_frames", "is_image"]


def gather_frames(unique_frames: torch.Tensor, unique: np.ndarray, indices: np.ndarray) -> torch.Tensor:
    """Expand frames decoded once per unique (sorted) index back to the requested (repeating) order."""
    if len(unique) == len(indices) and np.array_equal(unique, indices):
        return unique_frames  # the common case: no padding, already sorted; avoid a 4 ms copy
    positions = np.searchsorted(unique, indices)
    return unique_frames[torch.from_numpy(positions)]


def decode_image(source: str | bytes, scale: Callable[[int, int], tuple[int, int] | None] | None = None,
                 size: tuple[int, int] | None = None) -> np.ndarray:  # fmt: skip
    """One image (path or file bytes) as ``uint8 [H, W, 3]`` RGB, by Pillow (the file's own bytes
    decide the format; alpha dropped, grey and palette converted; an animated file's first frame).

    ``scale(height, width)`` gives the size wanted (None: full size): a JPEG then decodes at 1/2,
    1/4 or 1/8 scale for free (DCT scaling), never below it; other formats decode at full size.
    ``size``: the ``(height, width)`` the image must have (a frame of a folder: its first frame's),
    checked from the header before any pixel is decoded.

    Raises:
        DecodeError: the image has another size than ``size``. Pillow's own errors (OSError,
            SyntaxError, ValueError...) for missing or broken files: the caller names the file.
    """
    from PIL import Image

    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
        if size is not None and (image.height, image.width) != size:
            raise DecodeError(f"{image.width}x{image.height} frame where the first frame is {size[1]}x{size[0]}")
        wanted = scale(image.height, image.width) if scale is not None else None
        if wanted is not None and image.format == "JPEG":
            image.draft("RGB", (wanted[1], wanted[0]))
        return np.array(image.convert("RGB"))
