"""``python -m harness.config``: the key table (:mod:`harness.config.table`), one resolved key, or
the resolved config saved."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.config.arguments import config_from_args
from harness.config.fields import lookup
from harness.config.loading import save_config
from harness.config.schema import ConfigError
from harness.config.table import config_table
from harness.core.errors import entry_point
from harness.core.fileio import check_output_file


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
