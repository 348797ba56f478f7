"""``python -m harness.report RUN_DIR``: the run's charts and one HTML page, drawn by
:mod:`harness.report.page` (whose description ``--help`` prints)."""

from __future__ import annotations

import argparse
import sys

from harness.core.errors import entry_point
from harness.report import page


@entry_point
def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="harness-report", description=page.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("folder", help="run folder")
    args = parser.parse_args(argv)
    paths = page.render(args.folder)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
