"""Something-Something v2: ``labels.json`` (class name -> id as a string, the template with its
brackets removed), ``train.json`` and ``validation.json`` (lists of ``{"id", "label", "template",
"placeholders"}``); the videos are ``<id>.webm``. The test split has no labels and is left out."""

from __future__ import annotations

from pathlib import Path

from harness.core.errors import UserError
from harness.datasets.common import Converted, annotation_file, entry_field, json_list, read_json

FILES = "labels.json, train.json and validation.json"
SPLITS = {"train": "train.json", "val": "validation.json"}


def class_name(template: str) -> str:
    """``Holding [something] next to [something]`` -> ``Holding something next to something``."""
    return template.replace("[", "").replace("]", "")


def convert(annotations: Path) -> Converted:
    """The splits and classes of the annotation folder ``annotations``."""
    labels_path = annotation_file(annotations, "labels.json", FILES)
    labels = read_json(labels_path)
    if not isinstance(labels, dict):
        raise UserError(f"{labels_path}: expected a JSON object of class name -> id")
    try:
        ids = {name: int(value) for name, value in labels.items()}
    except (TypeError, ValueError):
        raise UserError(f"{labels_path}: every class id must be a whole number (as a string)") from None
    if sorted(ids.values()) != list(range(len(ids))):
        raise UserError(f"{labels_path}: the class ids must be 0..{len(ids) - 1}, each once")
    converted = Converted(classes=sorted(ids, key=ids.__getitem__))
    for split, name in SPLITS.items():
        path = annotation_file(annotations, name, FILES)
        entries = []
        for index, entry in enumerate(json_list(path)):
            video = str(entry_field(entry, "id", path, index))
            template = class_name(str(entry_field(entry, "template", path, index)))
            if template not in ids:
                raise UserError(f"{path}: entry {index + 1} (id {video}): template {template!r} is not in "
                                f"{labels_path}")  # fmt: skip
            entries.append((video, ids[template]))
        converted.splits[split] = entries
    return converted
