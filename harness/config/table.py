"""The key table: every config key with its type, default and meaning, generated from the schema
(``python -m harness.config`` prints it; docs/configuration.md holds it, kept in sync by a test)."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import yaml

from harness.config.schema import Config


def field_docs(cls: type) -> dict[str, str]:
    """Field name -> its ``#:`` comment in the class source (the key's documentation): after the
    field on its line, or alone on the line above it (for a long one). Inherited fields included."""
    import inspect
    import re

    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):  # built-ins, and classes made at run time (their bases have the source)
            continue
        above = None
        for line in source.splitlines():
            match = re.match(r"\s+(\w+): .*?#: (.*)$", line) or re.match(r"\s+(\w+): ", line)
            if re.match(r"\s+#: (.*)$", line):  # a comment over several lines is one text
                text = line.split("#:", 1)[1].strip()
                above = f"{above} {text}" if above else text
            elif match:
                doc = match.group(2).strip() if match.lastindex == 2 else above
                if doc is not None:
                    docs[match.group(1)] = doc
                above = None
    return docs


def config_table() -> str:
    """Markdown table of every config key with its type, default and meaning (for docs/configuration.md)."""
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    _table_rows(Config, "", lines)
    return "\n".join(lines) + "\n"


def _table_rows(cls: type, prefix: str, lines: list[str]) -> None:
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    for item in dataclasses.fields(cls):
        if item.metadata.get("internal"):
            continue
        hint = hints[item.name]
        inner = typing.get_args(hint)[0] if typing.get_origin(hint) is list else None
        if dataclasses.is_dataclass(hint):
            _table_rows(hint, f"{prefix}{item.name}.", lines)
        elif dataclasses.is_dataclass(inner):  # a list of sub-sections: its row, then each item key
            lines.append(
                _table_row(f"{prefix}{item.name}", "list of mappings", _default(item), docs.get(item.name, ""))
            )
            _table_rows(inner, f"{prefix}{item.name}[].", lines)
        else:
            lines.append(_table_row(f"{prefix}{item.name}", hint, _default(item), docs.get(item.name, "")))


def _default(item: dataclasses.Field) -> Any:
    if item.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return item.default_factory()  # type: ignore[misc]
    return item.default


def _table_row(key: str, hint: Any, default: Any, doc: str) -> str:
    type_name = hint if isinstance(hint, str) else str(hint).replace("typing.", "")
    type_name = hint.__name__ if isinstance(hint, type) else type_name
    type_name = type_name.replace(" | None", " or null").replace(" | ", " or ")
    shown = "null" if default is None else yaml.safe_dump(default, default_flow_style=True).strip().removesuffix("...")
    return f"| `{key}` | {type_name} | `{shown.strip()}` | {doc.replace('|', '/')} |"
