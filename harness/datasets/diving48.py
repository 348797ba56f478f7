"""Diving48 (V2 annotations): ``Diving48_vocab.json`` (per class id the list ``[takeoff, somersault,
twist, flight]``; the class name is the four joined by `` / ``), ``Diving48_V2_train.json`` and
``Diving48_V2_test.json`` (lists of ``{"vid_name", "label", "start_frame", "end_frame"}``); the
videos are ``<vid_name>.mp4``. The test split becomes ``val.csv``."""

from __future__ import annotations

from pathlib import Path

from harness.core.errors import UserError
from harness.datasets.common import Converted, annotation_file, entry_field, json_list

FILES = "Diving48_vocab.json, Diving48_V2_train.json and Diving48_V2_test.json"
SPLITS = {"train": "Diving48_V2_train.json", "val": "Diving48_V2_test.json"}


def convert(annotations: Path) -> Converted:
    """The splits and classes of the annotation folder ``annotations``."""
    vocab_path = annotation_file(annotations, "Diving48_vocab.json", FILES)
    classes = []
    for index, parts in enumerate(json_list(vocab_path)):
        if not isinstance(parts, list) or not all(isinstance(part, str) for part in parts):
            raise UserError(f"{vocab_path}: entry {index + 1} is not a list of names (takeoff, somersault, twist, "
                            f"flight): {parts!r}")  # fmt: skip
        classes.append(" / ".join(parts))
    converted = Converted(classes)
    for split, name in SPLITS.items():
        path = annotation_file(annotations, name, FILES)
        entries = []
        for index, entry in enumerate(json_list(path)):
            video, label = str(entry_field(entry, "vid_name", path, index)), entry_field(entry, "label", path, index)
            if not isinstance(label, int) or not 0 <= label < len(classes):
                raise UserError(f"{path}: entry {index + 1} ({video}): label {label!r} is not a class id 0.."
                                f"{len(classes) - 1} of {vocab_path.name}")  # fmt: skip
            entries.append((video, label))
        converted.splits[split] = entries
    return converted
