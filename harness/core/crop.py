"""A clip's crop size, as a config or a file gives it: one side in pixels (a square crop) or
``[height, width]``. Every layer turns it into ``(height, width)`` here, so that none of them squares
an int by hand (plain Python: the config, the planner and the commands' ``--help`` import it
without torch)."""

from __future__ import annotations

from collections.abc import Sequence

#: what ``data.crop_size`` holds: one side (square), or ``[height, width]``
CropSize = int | Sequence[int]


def crop_hw(crop_size: CropSize) -> tuple[int, int]:
    """``(height, width)`` in pixels of ``crop_size`` (an int is a square crop).

    Raises:
        ValueError: ``crop_size`` is neither an int nor a pair of them.
    """
    if isinstance(crop_size, (bool, str)):  # (a bool is an int to Python, a str a sequence: never a size)
        raise ValueError(f"crop size {crop_size!r} is neither one side nor [height, width]")
    if isinstance(crop_size, int):
        return crop_size, crop_size
    try:
        height, width = crop_size
    except (TypeError, ValueError):
        raise ValueError(f"crop size {crop_size!r} is neither one side nor [height, width]") from None
    return int(height), int(width)


def crop_text(crop_size: CropSize) -> str:
    """``"224"`` for a square crop, ``"224x320"`` (height x width) for another: for messages and logs."""
    height, width = crop_hw(crop_size)
    return str(height) if height == width else f"{height}x{width}"


def parse_crop(text: str) -> int | list[int]:
    """A crop size given on a command line: ``"224"`` (square) or ``"224x320"`` / ``"224,320"``
    (height, width), each side >= 1.

    Raises:
        ValueError: anything else, said in one line.
    """
    parts = text.lower().replace("x", ",").split(",")
    try:
        sides = [int(part) for part in parts]
    except ValueError:
        sides = []
    if len(sides) not in (1, 2) or min(sides) < 1:
        raise ValueError(f"{text!r} is neither one side (224) nor height x width (224x320) in pixels >= 1")
    return sides[0] if len(sides) == 1 else sides
