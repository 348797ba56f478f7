"""Class names: where they come from and how ids map to them.

Sources, first found wins: ``data.class_names`` (a text file, one name per line in id order, or
JSON: a list, or an ``{id: name}`` map), the label map of the first training (else validation)
shard manifest, or listings whose labels are names (ids in sorted order of the training names).
Without any, classes are called by their ids. ``data.class_names`` and a manifest that names its
classes must agree; a name must show something (no blank line, no ``""``).
"""

from __future__ import annotations

import functools
import json
import unicodedata
from collections.abc import Callable
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
        _refuse_blank(names, lambda i: f"{key}: {path}: class id {i} has an empty name: give every class a name")
    else:
        lines = [line.strip() for line in text.splitlines()]
        while lines and not lines[-1]:  # blank lines at the end name no class
            lines.pop()
        _refuse_blank(
            lines,
            lambda i: (
                f"{key}: {path}:{i + 1}: empty class name (a blank line shifts every later "
                "class id): give every class a name, one per line in id order"
            ),
        )
        names = lines
    if not names or len(set(names)) != len(names):
        raise ConfigError(
            f"{key}: {path}: expected distinct class names, got {len(names)} ({len(set(names))} distinct)"
        )
    return names


def _refuse_blank(names: list[str], where: Callable[[int], str]) -> None:
    """A name that shows nothing (empty, spaces, invisible characters) would print blank in every
    table and export: refuse it, ``where(index)`` saying where it is."""
    for index, name in enumerate(names):
        if not any(unicodedata.category(char)[0] not in "ZC" for char in name):
            raise ConfigError(where(index))


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
    """The run's class names in id order (see the module docs), or None when classes are ids (and
    for a label-set run, whose sets' names :func:`harness.training.label_sets.resolve_label_sets`
    reads)."""
    data = config.data
    if config.meta.label_sets:
        return None
    manifests = [(source, manifest_names(source)) for source in [*data.shards, *data.val_shards]]
    manifests = [(source, names) for source, names in manifests if names]
    if data.class_names:
        names = read_class_names(data.class_names)
        for source, labelled_with in manifests:
            if only_ids(labelled_with):  # ids name nothing: the file names them
                continue
            check_same_names(names, labelled_with, f"data.class_names {data.class_names}",
                             f"the shard manifest {source}", "fix or drop data.class_names")  # fmt: skip
        return names
    if manifests:
        return manifests[0][1]
    names = {name for path in data.datasets for name in listing_records(path).names or ()}
    return sorted(names) or None


def manifest_names(source: str) -> list[str] | None:
    """The names of a shard manifest's label map in id order (None for other sources or no map)."""
    if not source.endswith(".json"):
        return None
    label_map = read_manifest(source).get("label_map") or {}
    return [str(label_map[str(i)]) for i in range(len(label_map))] or None


def only_ids(names: list[str]) -> bool:
    """Whether ``names`` are only the class ids (a manifest made from a listing of ids)."""
    return names == [str(i) for i in range(len(names))]


def first_difference(names: list[str], others: list[str]) -> str | None:
    """``class <id>: <name> vs <other>`` at the first id where two name lists differ, or None."""
    for index in range(max(len(names), len(others))):
        mine = repr(names[index]) if index < len(names) else "no class"
        theirs = repr(others[index]) if index < len(others) else "no class"
        if mine != theirs:
            return f"class {index}: {mine} vs {theirs}"
    return None


def check_same_names(names: list[str], others: list[str], where: str, other: str, fix: str) -> None:
    """Refuse two sources of class names that disagree (every label would be read under the wrong
    name), naming both and the first class that differs."""
    if difference := first_difference(names, others):
        raise ConfigError(f"{where} and {other} name the classes differently ({difference}): {fix}")


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
