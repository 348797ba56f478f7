"""Command-line options that several commands share (argparse only: no torch import)."""

from __future__ import annotations

import argparse


def add_weights_option(parser: argparse.ArgumentParser) -> None:
    """``--weights ema|trained``: which weights of a checkpoint to take."""
    parser.add_argument("--weights", choices=("ema", "trained"), default="ema",
                        help="from a checkpoint: the moving average of the weights if the run kept one (default), "
                        "or the weights as trained")  # fmt: skip


def source_and_out_parser(prog: str, description: str | None, source: str, source_help: str) -> argparse.ArgumentParser:
    """A parser for a command that reads a trained model (``source``) and writes a folder (``out``),
    with ``--weights``."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument(source, help=source_help)
    parser.add_argument("out", help="output folder")
    add_weights_option(parser)
    return parser
