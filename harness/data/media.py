"""What a file is by its name: still images (no torch import: ``prepare`` asks too)."""

from __future__ import annotations

#: file extensions read as still images (lower case, no dot): one RGB frame each
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp")


def is_image(name: str) -> bool:
    """Whether a path (or tar member name) is a still image, by its extension (case ignored)."""
    return name.rpartition(".")[2].lower() in IMAGE_EXTENSIONS if "." in name else False
