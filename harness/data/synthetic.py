"""Small real mp4 datasets made on the fly: the built-in demo and the test fixtures.

Each video shows a coloured square moving across a textured background; the class is the
direction of motion (right, left, down, up, ...). A single frame says nothing about the class,
so a model that beats chance has learned motion, not colour. The multi-label variant shows one
or two squares moving in different directions; its labels are the directions present.
"""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import numpy as np

from harness.data.listing import VideoRecord, write_listing

DIRECTIONS = ("right", "left", "down", "up", "down-right", "up-left", "down-left", "up-right")


def write_video(path: str | Path, frames: np.ndarray, fps: float = 30, gop: int = 12, crf: int = 20) -> None:
    """Encode ``uint8 [T, H, W, 3]`` RGB frames to an H.264 mp4 at a constant ``fps``.

    Height and width must be even (yuv420p).
    """
    import av

    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.height, stream.width = int(frames.shape[1]), int(frames.shape[2])
        stream.pix_fmt = "yuv420p"
        stream.gop_size = gop
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        for array in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def moving_square_frames(
    direction: int, num_frames: int, height: int, width: int, rng: np.random.Generator
) -> np.ndarray:
    """Frames ``uint8 [T, H, W, 3]`` of a square moving in ``DIRECTIONS[direction]``."""
    return moving_squares_frames([direction], num_frames, height, width, rng)


def _path(direction: int, num_frames: int, height: int, width: int, rng: np.random.Generator):
    """Side and top-left corners over time of a square crossing the frame in ``direction``."""
    name = DIRECTIONS[direction]
    dx = 1 if "right" in name else -1 if "left" in name else 0
    dy = 1 if "down" in name else -1 if "up" in name else 0
    side = int(rng.integers(min(height, width) // 6, min(height, width) // 3))
    speed = float(rng.uniform(0.5, 1.0)) * (min(height, width) - side) / max(num_frames - 1, 1)
    span_x, span_y = width - side, height - side
    x0 = span_x * (0.0 if dx > 0 else 1.0 if dx < 0 else rng.uniform(0, 1))
    y0 = span_y * (0.0 if dy > 0 else 1.0 if dy < 0 else rng.uniform(0, 1))
    steps = np.arange(num_frames)
    xs = np.clip(x0 + dx * speed * steps, 0, span_x).astype(int)
    ys = np.clip(y0 + dy * speed * steps, 0, span_y).astype(int)
    return side, xs, ys


def moving_squares_frames(
    directions: list[int], num_frames: int, height: int, width: int, rng: np.random.Generator
) -> np.ndarray:
    """Frames ``uint8 [T, H, W, 3]`` of one square per entry of ``directions``, each moving that way."""
    return moving_squares(directions, num_frames, height, width, rng)[0]


def moving_squares(
    directions: list[int], num_frames: int, height: int, width: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """As :func:`moving_squares_frames` (the same draws from ``rng``), and where the squares are:
    frames ``uint8 [T, H, W, 3]`` and ``bool [T, H, W]``, True on the squares' pixels."""
    paths = [_path(direction, num_frames, height, width, rng) for direction in directions[:1]]
    background = rng.integers(0, 80, size=(height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    background = np.kron(background, np.ones((8, 8, 1), dtype=np.uint8))[:height, :width]
    colours = [rng.integers(150, 256, size=3, dtype=np.uint8)]
    for direction in directions[1:]:  # (drawn after the first square's colour: the demo's videos stay as they were)
        paths.append(_path(direction, num_frames, height, width, rng))
        colours.append(rng.integers(150, 256, size=3, dtype=np.uint8))
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    masks = np.zeros((num_frames, height, width), dtype=bool)
    for t in range(num_frames):
        frames[t] = background
        for (side, xs, ys), colour in zip(paths, colours):
            frames[t, ys[t] : ys[t] + side, xs[t] : xs[t] + side] = colour
            masks[t, ys[t] : ys[t] + side, xs[t] : xs[t] + side] = True
    return frames, masks


def write_class_names(root: str | Path, num_classes: int) -> Path:
    """``root/classes.txt``: the demo's class names (directions of motion) in id order."""
    path = Path(root) / "classes.txt"
    path.write_text("".join(f"{name}\n" for name in DIRECTIONS[:num_classes]), encoding="utf-8")
    return path


class DemoVideo(NamedTuple):
    """One video of the demo dataset: where it goes, its classes, its frames ``uint8 [T, H, W, 3]``
    and the squares' pixels ``bool [T, H, W]`` (what :func:`demo_videos` yields)."""

    split: str
    relative: str
    directions: list[int]
    frames: np.ndarray
    masks: np.ndarray


def demo_videos(
    num_classes: int = 4,
    train_per_class: int = 24,
    val_per_class: int = 8,
    num_frames: int = 32,
    size: tuple[int, int] = (96, 128),
    seed: int = 0,
    multi_label: bool = False,
) -> Iterator[DemoVideo]:
    """The videos :func:`make_demo_dataset` writes with the same arguments, in its order and from
    the same draws, without writing them: a test can ask where each square was in every frame."""
    if not 2 <= num_classes <= len(DIRECTIONS):
        raise ValueError(f"num_classes must be in [2, {len(DIRECTIONS)}], got {num_classes}")
    rng = np.random.default_rng(seed)
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        for label in range(num_classes):
            for i in range(per_class):
                directions = [label]
                if multi_label and rng.random() < 0.5:
                    directions.append(int(rng.choice([c for c in range(num_classes) if c != label])))
                frames, masks = moving_squares(directions, num_frames, size[0], size[1], rng)
                yield DemoVideo(split, f"{split}/{DIRECTIONS[label]}_{i:03d}.mp4", directions, frames, masks)


def make_demo_dataset(
    root: str | Path,
    num_classes: int = 4,
    train_per_class: int = 24,
    val_per_class: int = 8,
    num_frames: int = 32,
    size: tuple[int, int] = (96, 128),
    fps: float = 15,
    seed: int = 0,
    progress: bool = True,
    multi_label: bool = False,
    label_sets: bool = False,
) -> tuple[Path, Path]:
    """Write a labelled moving-squares dataset, its ``train.csv`` / ``val.csv`` listings and
    ``classes.txt`` (the direction of each class id). ``multi_label``: each video shows one or two
    squares in different directions, listed with all of them (``path 0,3``). ``label_sets`` (4
    classes): each video is listed with its id in each of :data:`LABEL_SETS`, under the header
    ``path,axis,sense,direction`` (see :func:`make_label_set_demo`).

    Returns:
        Paths of the train and validation listings (V-JEPA 2 format, relative paths).
    """
    root = Path(root)
    records: dict[str, list[VideoRecord]] = {"train": [], "val": []}
    total = num_classes * (train_per_class + val_per_class)
    from harness.core.progress import progress as progress_bar

    videos = demo_videos(num_classes, train_per_class, val_per_class, num_frames, size, seed, multi_label)
    with progress_bar(total=total, desc="demo videos", enabled=progress, unit="video") as bar:
        for video in videos:
            (root / video.split).mkdir(parents=True, exist_ok=True)
            write_video(root / video.relative, video.frames, fps=fps)
            label = tuple(sorted(video.directions)) if multi_label else video.directions[0]
            label = label_set_ids(label) if label_sets else label
            records[video.split].append(VideoRecord(video.relative, label))
            bar.update()
    for split, listed in records.items():
        (root / split).mkdir(parents=True, exist_ok=True)  # (an empty split still gets its folder)
        write_listing(listed, root / f"{split}.csv", list(LABEL_SETS) if label_sets else None)
    write_class_names(root, num_classes)
    return root / "train.csv", root / "val.csv"


#: the label sets of :func:`make_label_set_demo`, each set's class names in id order: a direction
#: (right, left, down, up) is an axis and a sense along it, as an EPIC-KITCHENS-100 action is a verb
#: and a noun
LABEL_SETS = {"axis": ("horizontal", "vertical"), "sense": ("forward", "backward"), "direction": DIRECTIONS[:4]}


def label_set_ids(direction: int) -> tuple[int, int, int]:
    """The ``(axis, sense, direction)`` ids of one of the 4 axis-aligned directions: right and left
    move along the horizontal axis, down and up along the vertical; right and down go forward
    (growing pixel coordinates)."""
    return direction // 2, direction % 2, direction


def make_label_set_demo(root: str | Path, train_per_class: int = 24, val_per_class: int = 8, num_frames: int = 32,
                        size: tuple[int, int] = (96, 128), fps: float = 15, seed: int = 0,
                        progress: bool = True) -> tuple[Path, Path]:  # fmt: skip
    """The 4-direction demo videos (:func:`make_demo_dataset`'s) labelled in three label sets,
    :data:`LABEL_SETS` (``meta.label_sets: [axis, sense, direction]``): listings with a column per
    set (``path,axis,sense,direction`` then ``train/right_000.mp4,0,0,0``) and ``classes_<set>.txt``
    per set.

    Returns:
        Paths of the train and validation listings.
    """
    root = Path(root)
    listings = make_demo_dataset(root, 4, train_per_class, val_per_class, num_frames, size, fps, seed, progress,
                                 label_sets=True)  # fmt: skip
    for name, classes in LABEL_SETS.items():
        (root / f"classes_{name}.txt").write_text("".join(f"{c}\n" for c in classes), encoding="utf-8")
    return listings
