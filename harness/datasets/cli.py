"""Turn a public benchmark's official annotation files into harness listings:
``python -m harness.datasets NAME --annotations PATH --videos DIR --output DIR``.

Writes into ``--output``: ``train.csv`` and ``val.csv`` (and ``test.csv`` where the dataset has a
labelled test split) as ``path label`` lines with absolute paths, ``classes.txt`` (line ``i`` is the
name of class id ``i``) and ``missing.txt`` (``split key`` of each annotated video not found below
``--videos``: skipped, never fatal). Prints one line per split and one for the total. The exit
status is 2 for a bad annotation file (the message names it and the line) and when no annotated
video at all is on disk. The expected files of each dataset: docs/data.md, "Dataset converters".
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from harness.core.errors import RunFailed, UserError, entry_point

#: name -> the module of harness.datasets that reads it
CONVERTERS = {"ssv2": "ssv2", "kinetics": "kinetics", "ucf101": "ucf101", "hmdb51": "hmdb51", "diving48": "diving48",
              "folders": "folders"}  # fmt: skip
WITH_SPLITS = ("ucf101", "hmdb51")  #: datasets with three official train/test splits (``--split``)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="harness-datasets", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("name", choices=sorted(CONVERTERS), help="the dataset whose annotations are read")
    parser.add_argument("--annotations", type=Path, default=None, help="the folder of the official annotation files")
    parser.add_argument("--videos", type=Path, required=True, help="the folder the videos are in (searched below)")
    parser.add_argument("--output", type=Path, required=True, help="the folder the listings are written to")
    parser.add_argument("--split", type=int, choices=(1, 2, 3), default=1, help="ucf101, hmdb51: the official "
                        "split (default 1)")  # fmt: skip
    parser.add_argument("--val-fraction", type=float, default=0.0, help="folders without train/ and val/: the "
                        "share of each class's videos listed in val.csv (default 0)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="folders: the draw of --val-fraction (default 0)")
    args = parser.parse_args(argv)
    if not 0 <= args.val_fraction < 1:
        raise UserError(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    if args.annotations is None and args.name != "folders":
        raise UserError(f"{args.name} needs --annotations: the folder of its official annotation files")
    if args.annotations is not None and not args.annotations.is_dir():
        raise UserError(f"--annotations {args.annotations}: no such folder; give the folder of the annotation files")
    if not args.videos.is_dir():
        raise UserError(f"--videos {args.videos}: no such folder; give the folder the videos are in")
    if args.output.exists() and not args.output.is_dir():
        raise UserError(f"--output {args.output}: a file is there; give a folder (made if missing)")
    return args


@entry_point
def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = parse_args(argv)
    from harness.datasets.common import write_converted

    module = importlib.import_module(f"harness.datasets.{CONVERTERS[args.name]}")
    if args.name == "folders":
        converted = module.convert(args.videos, args.val_fraction, args.seed)
    elif args.name in WITH_SPLITS:
        converted = module.convert(args.annotations, args.split)
    else:
        converted = module.convert(args.annotations)
    lines, listed = write_converted(converted, args.videos, args.output)
    for line in lines:
        print(line)
    if listed == 0:
        raise RunFailed(f"no annotated video was found below --videos {args.videos} (see "
                        f"{args.output / 'missing.txt'}); give the folder holding the video files")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
