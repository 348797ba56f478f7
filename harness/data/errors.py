"""The error of a video, image or segment that cannot be used (no torch import: ``prepare`` and
the listing tools raise it too)."""

from __future__ import annotations


class DecodeError(RuntimeError):
    """A video or image that cannot be opened or decoded (missing, empty, truncated, not a video),
    or a segment of it that holds no frame."""
