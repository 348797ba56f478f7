"""The key table (docs/configuration.md), the shared ``--config CFG overrides...`` parser and
``python -m harness.config``."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import typing
from pathlib import Path
from typing import Any

import yaml

from harness.config.fields import lookup
from harness.config.loading import load_config, save_config
from harness.config.schema import Config, ConfigError
from harness.core.errors import entry_point
from harness.core.fileio import check_output_file


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
            if re.match(r"\s+#: (.*)$", line):
                above = line.split("#:", 1)[1].strip()
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


def argument_parser(prog: str, description: str | None) -> argparse.ArgumentParser:
    """A command-line parser with ``--config CFG`` and ``section.key=value`` overrides (entry points
    add their own options)."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True, help="YAML config (V-JEPA 2 classifier files work as they are)")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. optimization.lr=1e-4")
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    """The config that ``args.config`` and ``args.overrides`` describe (raises :class:`ConfigError`,
    naming the key with a suggestion; the entry point turns it into one line and exit status 2)."""
    return load_config(args.config, args.overrides)


def log_config_notes(config: Config, log: logging.Logger) -> None:
    """Log what loading the config noted: ignored keys, the V-JEPA 2 keys it translated, and
    ``warning:`` lines (deprecated keys) as warnings. Every command that reads a config calls it
    (on the main rank)."""
    if config.ignored:
        log.info("ignored keys (launcher resources, or not read by the original either): %s", ", ".join(config.ignored))
    for note in config.notes:
        if note.startswith("warning: "):
            log.warning(note.removeprefix("warning: "))
        else:
            log.info("config: %s", note)


@entry_point
def main(argv: list[str] | None = None) -> int:
    """``python -m harness.config``: the key table; with ``--config`` (and overrides), print one
    resolved key (``--get folder``) or save the resolved config (``--save PATH``)."""
    parser = argparse.ArgumentParser(prog="python -m harness.config", description=main.__doc__)
    parser.add_argument("--config", default=None, help="YAML config to resolve")
    parser.add_argument("--get", default=None, help="print this resolved key (e.g. folder, data.batch_size)")
    parser.add_argument("--save", default=None, help="write the resolved config to this path")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides")
    args = parser.parse_args(argv)
    if args.config is None and not args.overrides:
        print(config_table(), end="")
        return 0
    if args.save:  # before any work
        check_output_file(args.save, ConfigError, "--save")
    config = config_from_args(args)
    if args.save:
        Path(args.save).parent.mkdir(parents=True, exist_ok=True)
        save_config(config, args.save)
    if args.get:
        try:
            print(lookup(config, args.get))
        except AttributeError:
            raise ConfigError(f"unknown key {args.get!r}") from None
    return 0
