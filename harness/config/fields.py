"""How a config key declares its own rules, and the tables read back from the schema.

A key's allowed values live in its field's metadata, next to the key: ``range`` (an interval such
as ``"[0, 1)"``, checked for each entry of a list key) and ``choices`` (a tuple of values). Sections
declared outside this package (each strategy's options, :mod:`harness.parallel.registry`) use the
same two metadata names with a plain :func:`dataclasses.field`, so they need not import this module.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Iterable
from typing import Any


def key(
    default: Any = dataclasses.MISSING,
    *,
    factory: Callable[[], Any] | None = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: Iterable[Any] | None = None,
) -> Any:
    """A config field with its default (or ``factory`` for a mutable one) and its rules: a lower
    bound ``ge`` (>=) or ``gt`` (>), an upper bound ``le`` (<=) or ``lt`` (<), or ``choices``."""
    metadata: dict[str, Any] = {}
    if choices is not None:
        metadata["choices"] = tuple(choices)
    if any(bound is not None for bound in (ge, gt, le, lt)):
        low = f"[{ge:g}" if ge is not None else f"({gt:g}" if gt is not None else "(-inf"
        high = f"{le:g}]" if le is not None else f"{lt:g})" if lt is not None else "inf)"
        metadata["range"] = f"{low}, {high}"
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def constraints(cls: type, kind: str, prefix: str = "") -> dict[str, Any]:
    """``section.key`` -> the ``kind`` metadata (``"range"`` or ``"choices"``) of every key under
    the dataclass ``cls``, in schema order; keys of a list of sub-sections read ``heads[].lr``."""
    table: dict[str, Any] = {}
    hints = typing.get_type_hints(cls)
    for item in dataclasses.fields(cls):
        hint = hints[item.name]
        inner = typing.get_args(hint)[0] if typing.get_origin(hint) is list else None
        if dataclasses.is_dataclass(hint):
            table.update(constraints(hint, kind, f"{prefix}{item.name}."))
        elif dataclasses.is_dataclass(inner):
            table.update(constraints(inner, kind, f"{prefix}{item.name}[]."))
        elif kind in item.metadata:
            table[f"{prefix}{item.name}"] = item.metadata[kind]
    return table


def lookup(config: Any, dotted: str) -> Any:
    """The value of the ``section.key`` ``dotted`` in ``config`` (AttributeError when unknown)."""
    value: Any = config
    for part in dotted.split("."):
        value = getattr(value, part)
    return value
