"""Folders of numbered frames for the tests, written with Pillow: from frames in memory, and the
demo dataset laid out as EPIC-KITCHENS lays out its videos (``train/right_000/frame_0000000001.jpg``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.data.listing import VideoRecord, write_listing
from harness.data.synthetic import demo_videos, write_class_names


def write_frames(folder: Path, frames: np.ndarray, extension: str = "png", name: str = "frame_{:010d}",
                 first: int = 1) -> list[Path]:  # fmt: skip
    """Write ``uint8 [T, H, W, 3]`` frames as ``folder/<name.format(first + t)>.<extension>`` (PNG
    lossless; JPEG quality 95); returns the files in frame order."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for offset, frame in enumerate(frames):
        path = folder / f"{name.format(first + offset)}.{extension}"
        Image.fromarray(np.ascontiguousarray(frame)).save(path, quality=95)
        paths.append(path)
    return paths


def make_frame_folder_dataset(root: Path, num_classes: int = 4, train_per_class: int = 6, val_per_class: int = 2,
                              num_frames: int = 24, size: tuple[int, int] = (48, 64)) -> Path:  # fmt: skip
    """The demo dataset (:func:`harness.data.synthetic.demo_videos`, the same draws) with each video a
    folder of JPEG frames; ``train.csv`` / ``val.csv`` list the folders (relative paths) and
    ``classes.txt`` names the classes. Returns ``root``."""
    records: dict[str, list[VideoRecord]] = {"train": [], "val": []}
    for video in demo_videos(num_classes, train_per_class, val_per_class, num_frames, size):
        relative = video.relative.removesuffix(".mp4")
        write_frames(root / relative, video.frames, "jpg")
        records[video.split].append(VideoRecord(relative, video.directions[0]))
    for split, listed in records.items():
        write_listing(listed, root / f"{split}.csv")
    write_class_names(root, num_classes)
    return root
