"""UCF101's official split files (``ucfTrainTestlist``): ``classInd.txt`` (``1 ApplyEyeMakeup``:
1-based ids), ``trainlist0N.txt`` (``ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1``) and
``testlist0N.txt`` (the path alone: its folder is the class) for the splits ``N`` = 1, 2, 3. The
test list of a split becomes ``val.csv``, what training evaluates on."""

from __future__ import annotations

from pathlib import Path

from harness.core.errors import UserError
from harness.datasets.common import Converted, annotation_file, text_lines

FILES = "classInd.txt, trainlist0N.txt and testlist0N.txt (ucfTrainTestlist)"


def read_classes(path: Path) -> list[str]:
    """The class names of ``classInd.txt`` in id order (its ids are 1-based and must run 1..N)."""
    names: dict[int, str] = {}
    for line, words in text_lines(path):
        if len(words) != 2 or not words[0].isdigit():
            raise UserError(f"{path}:{line}: expected '<id> <class name>', got {' '.join(words)!r}")
        names[int(words[0])] = words[1]
    if sorted(names) != list(range(1, len(names) + 1)):
        raise UserError(f"{path}: the class ids must run 1..{len(names)}, each once")
    return [names[index] for index in sorted(names)]


def convert(annotations: Path, split: int) -> Converted:
    """The train and test lists of ``split`` (1, 2 or 3) in the folder ``annotations``."""
    classes = read_classes(annotation_file(annotations, "classInd.txt", FILES))
    by_folder = {name.lower(): index for index, name in enumerate(classes)}  # a folder's case may differ
    converted = Converted(classes)
    for name, listing in ((f"trainlist0{split}.txt", "train"), (f"testlist0{split}.txt", "val")):
        path = annotation_file(annotations, name, FILES)
        entries = []
        for line, words in text_lines(path):
            folder = words[0].split("/")[0].lower() if "/" in words[0] else None
            if len(words) == 2 and words[1].isdigit() and 1 <= int(words[1]) <= len(classes):
                label = int(words[1]) - 1
            elif len(words) == 1 and folder in by_folder:
                label = by_folder[folder]
            else:
                raise UserError(f"{path}:{line}: expected '<class>/<video>.avi' (and a class id 1..{len(classes)} "
                                f"in a train list), got {' '.join(words)!r}")  # fmt: skip
            entries.append((words[0], label))
        converted.splits[listing] = entries
    return converted
