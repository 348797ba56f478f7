"""HMDB51's official split files (``testTrainMulti_7030_splits``): per class and split ``N`` = 1, 2,
3 a file ``<class>_test_split<N>.txt`` of lines ``<video>.avi <0|1|2>`` (1 train, 2 test, 0 not
used). Class ids follow the class names sorted alphabetically; videos are found as
``<class>/<video>.avi`` or by name. The test videos become ``val.csv``."""

from __future__ import annotations

from pathlib import Path

from harness.core.errors import UserError
from harness.datasets.common import Converted, text_lines

SPLIT_OF = {"1": "train", "2": "val"}  #: the official marks; 0 = not in this split


def convert(annotations: Path, split: int) -> Converted:
    """The train and test videos of ``split`` (1, 2 or 3) in the folder ``annotations``."""
    suffix = f"_test_split{split}.txt"
    files = sorted(path for path in annotations.iterdir() if path.name.endswith(suffix))
    if not files:
        raise UserError(f"{annotations}: no <class>{suffix} files; --annotations must be the folder of HMDB51's "
                        "split files (testTrainMulti_7030_splits)")  # fmt: skip
    classes = [path.name[: -len(suffix)] for path in files]
    converted = Converted(classes, {"train": [], "val": []})
    for label, (name, path) in enumerate(zip(classes, files)):
        for line, words in text_lines(path):
            if len(words) != 2 or words[1] not in ("0", "1", "2"):
                raise UserError(f"{path}:{line}: expected '<video>.avi <0|1|2>', got {' '.join(words)!r}")
            if words[1] in SPLIT_OF:
                converted.splits[SPLIT_OF[words[1]]].append((f"{name}/{words[0]}", label))
    return converted
