"""Class names: where they come from and how ids map to them.

Sources, first found wins: ``data.class_names`` (a text file, one name per line in id order, or
JSON: a list, or an ``{id: name}`` map), the label map of the first training (else validation)
shard manifest, or listings whose labels are names (ids in sorted order of the training names).
Without any, classes are called by their ids.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from harness.config import Config, ConfigError
from harness.data.listing import Listing, ListingError, name_labels, read_listing
from harness.data.shard_io import read_manifest


def read_class_names(path: str | Path, key: str = "data.class_names") -> list[str]:
    """Names in id order from a text file (one per line) or a JSON list / ``{id: name}`` map."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{key}: {path} not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError(f"{key}: {path} is not UTF-8 text") from None
    if path.suffix == ".json":
        try:
            values = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"{key}: {path} is not valid JSON ({error})") from None
        if isinstance(values, dict):
            try:
                ids = sorted(int(k) for k in values)
            except ValueError:
                raise ConfigError(f"{key}: {path}: the keys of an id -> name map must be class ids") from None
            if ids != list(range(len(ids))):
                raise ConfigError(f"{key}: {path}: class ids must be 0..{len(ids) - 1}, got {ids[:10]}")
            values = [values[str(i)] if str(i) in values else values[i] for i in ids]
        if not isinstance(values, list) or not all(isinstance(v, (str, int)) for v in values):
            raise ConfigError(f"{key}: {path}: expected a list of names or an id -> name map")
        names = [str(v) for v in values]
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names or len(set(names)) != len(names):
        raise ConfigError(
            f"{key}: {path}: expected distinct class names, got {len(names)} ({len(set(names))} distinct)"
        )
    return names


@functools.lru_cache(maxsize=16)
def _listing(path: str, stamp: tuple[int, int]) -> Listing:
    return read_listing(path)


def listing_records(path: str) -> Listing:
    """A listing, read once while the file is unchanged (class names need a first look; the
    columns are shared, never modified)."""
    try:
        info = Path(path).stat()
    except OSError:
        return read_listing(path)  # raises the listing error naming the file
    return _listing(str(path), (info.st_mtime_ns, info.st_size))


def resolve_class_names(config: Config) -> list[str] | None:
    """The run's class names in id order (see the module docs), or None when classes are ids."""
    data = config.data
    if data.class_names:
        return read_class_names(data.class_names)
    for source in [*data.shards, *data.val_shards]:
        if source.endswith(".json"):
            label_map = read_manifest(source).get("label_map") or {}
            if label_map:
                return [str(label_map[str(i)]) for i in range(len(label_map))]
    names = {name for path in data.datasets for name in listing_records(path).names or ()}
    return sorted(names) or None


def labelled(listing: Listing, names: list[str] | None, key: str) -> Listing:
    """``listing`` with name labels turned into ids (a name-labelled listing needs names)."""
    if not listing.named:
        return listing
    if names is None:
        raise ConfigError(f"data.{key}: {listing.where(0)}: the listing names classes but the training data has "
                          "no class names: give data.class_names")  # fmt: skip
    try:
        return name_labels(listing, names, "the run")
    except ListingError as error:
        raise ConfigError(f"data.{key}: {error}") from None


def display_names(names: list[str] | None, num_classes: int) -> list[str]:
    """A name for every class id (the id itself where no name is known)."""
    if names is not None and len(names) != num_classes:
        raise ConfigError(f"the run has {num_classes} classes but {len(names)} class names: make them agree "
                          "(data.class_names or meta.num_classes)")  # fmt: skip
    return list(names) if names is not None else [str(i) for i in range(num_classes)]
