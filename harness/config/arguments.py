"""What every command that reads a config shares: the ``--config CFG overrides...`` parser, the
config it describes, and the notes loading it made (logged once, on the main rank)."""

from __future__ import annotations

import argparse
import logging

from harness.config.loading import load_config
from harness.config.schema import Config


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
