"""Long videos with labelled segments, made of the demo's moving squares: each video shows the
classes one after another, and a segment listing names each part (tests/data/test_segments.py)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from harness.data.synthetic import DIRECTIONS, moving_square_frames, write_video

PART_FRAMES, FPS = 24, 12.0  #: each labelled part: 2 s


def make_segment_dataset(root: Path, num_classes: int = 4, train_videos: int = 6, val_videos: int = 2,
                         size: tuple[int, int] = (48, 64), seed: int = 0) -> Path:  # fmt: skip
    """Videos of ``num_classes`` parts of :data:`PART_FRAMES` frames, each part one class's motion
    (the classes in a shuffled order per video), with a 6-frame gap of still noise between parts
    that no segment covers; ``train.csv`` and ``val.csv`` list every part as ``path,label,start,end``
    in seconds; ``classes.txt`` names the classes."""
    rng = np.random.default_rng(seed)
    height, width = size
    gap = 6
    for split, count in (("train", train_videos), ("val", val_videos)):
        (root / split).mkdir(parents=True, exist_ok=True)
        rows = []
        for number in range(count):
            order = rng.permutation(num_classes)
            parts, frame = [], 0
            for label in order.tolist():
                parts.append(moving_square_frames(label, PART_FRAMES, height, width, rng))
                rows.append([f"{split}/long_{number:02d}.mp4", label, frame / FPS, (frame + PART_FRAMES) / FPS])
                frame += PART_FRAMES
                parts.append(rng.integers(0, 255, (gap, height, width, 3), dtype=np.uint8))
                frame += gap
            write_video(root / split / f"long_{number:02d}.mp4", np.concatenate(parts), fps=FPS, gop=PART_FRAMES)
        with open(root / f"{split}.csv", "w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["path", "label", "start", "end"])
            writer.writerows(rows)
    (root / "classes.txt").write_text("\n".join(DIRECTIONS[:num_classes]) + "\n")
    return root
