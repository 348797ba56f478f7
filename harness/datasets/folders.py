"""Any dataset laid out as one folder per class: ``--videos/<class>/...`` or, already split,
``--videos/train/<class>/...`` and ``--videos/val/<class>/...`` (and ``test/``). Class ids follow
the class names sorted; videos are found below each class folder. Without split folders
``val_fraction`` of each class's videos (drawn with ``seed``) go to ``val.csv``."""

from __future__ import annotations

import random
from pathlib import Path

from harness.datasets.common import VIDEO_SUFFIXES, Converted

SPLIT_FOLDERS = ("train", "val", "test")  #: top folders that are splits rather than classes


def class_videos(folder: Path, root: Path) -> dict[str, list[str]]:
    """Class name -> the paths (relative to ``root``, sorted) of the videos below ``folder/<class>``."""
    found = {}
    for class_folder in sorted(path for path in folder.iterdir() if path.is_dir()):
        videos = (path for path in class_folder.rglob("*") if path.name.lower().endswith(VIDEO_SUFFIXES))
        found[class_folder.name] = sorted(str(path.relative_to(root)) for path in videos if path.is_file())
    return found


def convert(videos: Path, val_fraction: float, seed: int) -> Converted:
    """The classes and splits of the folder ``videos``."""
    if (videos / "train").is_dir():
        per_split = {split: class_videos(videos / split, videos) for split in SPLIT_FOLDERS
                     if (videos / split).is_dir()}  # fmt: skip
    else:
        per_split = {"train": class_videos(videos, videos), "val": {}}
        rng = random.Random(seed)
        for name, paths in per_split["train"].items():
            held = set(rng.sample(paths, round(val_fraction * len(paths))))
            per_split["train"][name] = [path for path in paths if path not in held]
            per_split["val"][name] = [path for path in paths if path in held]
    classes = sorted({name for found in per_split.values() for name in found})
    ids = {name: index for index, name in enumerate(classes)}
    splits = {split: [(path, ids[name]) for name, paths in found.items() for path in paths]
              for split, found in per_split.items()}  # fmt: skip
    return Converted(classes, splits)
