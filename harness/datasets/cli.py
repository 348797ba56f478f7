"""Turn a public benchmark's official annotation files into harness listings:
``python -m harness.datasets NAME --annotations PATH --videos DIR --output DIR``.

Writes into ``--output``: ``train.csv`` and ``val.csv`` (and ``test.csv`` where the dataset has a
labelled test split) as ``path label`` lines with absolute paths, ``classes.txt`` (line ``i`` is the
name of class id ``i``) and ``missing.txt`` (``split key`` of each annotated video not found below
``--videos``: skipped, never fatal). ek100 (and charades with --segments) write segment listings
instead: a CSV header ``path,verb,noun,action,start,end`` (``path,label,start,end``), one line per
annotated interval, and ``classes_<set>.txt`` per label set. ``csv`` reads any annotation CSV
through ``--columns`` (path, label, optionally a segment and a split). Prints one line per split and one for
the total. The exit status is 2 for a bad annotation file (the message names it and the line) and
when no annotated video at all is on disk. The expected files of each dataset: docs/data.md,
"Dataset converters".
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from harness.core.errors import RunFailed, UserError, entry_point

#: name -> the module of harness.datasets that reads it
CONVERTERS = {"ssv2": "ssv2", "kinetics": "kinetics", "ucf101": "ucf101", "hmdb51": "hmdb51", "diving48": "diving48",
              "ek100": "ek100", "charades": "charades", "folders": "folders", "csv": "table"}  # fmt: skip
WITH_SPLITS = ("ucf101", "hmdb51")  #: datasets with three official train/test splits (``--split``)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="harness-datasets", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("name", choices=sorted(CONVERTERS), help="the dataset whose annotations are read")
    parser.add_argument("--annotations", type=Path, default=None, help="the folder of the official annotation files "
                        "(csv: the annotation CSV file)")  # fmt: skip
    parser.add_argument("--videos", type=Path, default=None, help="the folder the videos are in (searched below)")
    parser.add_argument("--frames", type=Path, default=None, help="ek100, instead of --videos: the folder of the "
                        "frame folders (<participant>/rgb_frames/<video_id>/); intervals in frames")  # fmt: skip
    parser.add_argument("--output", type=Path, required=True, help="the folder the listings are written to")
    parser.add_argument("--split", type=int, choices=(1, 2, 3), default=1, help="ucf101, hmdb51: the official "
                        "split (default 1)")  # fmt: skip
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=0.0,
        help="folders without train/ and val/, csv "
        "without a split column: the share of each class's videos listed in val.csv (default 0)",
    )
    parser.add_argument("--seed", type=int, default=0, help="folders, csv: the draw of --val-fraction (default 0)")
    parser.add_argument(
        "--columns",
        default=None,
        help="csv: the file's columns for path, label and optionally "
        "start,end (or start_frame,end_frame) and split, as path=video,label=class,...",
    )
    parser.add_argument("--action-pairs", choices=("all", "train"), default=None, help="ek100: the (verb, noun) "
                        "pairs numbered as actions: those of train and validation (all, the default) or of train "
                        "only, as V-JEPA 2 (validation segments of another pair are then left out)")  # fmt: skip
    parser.add_argument("--segments", action="store_true", help="charades: a segment listing (one line per "
                        "action interval) instead of the video-level multi-label listing")  # fmt: skip
    args = parser.parse_args(argv)
    check_dataset_options(args)
    if not 0 <= args.val_fraction < 1:
        raise UserError(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    if args.annotations is None and args.name != "folders":
        raise UserError(f"{args.name} needs --annotations: the folder of its official annotation files")
    if args.name == "csv":
        if not args.annotations.is_file():
            raise UserError(f"--annotations {args.annotations}: no such file; give the annotation CSV file")
        if args.columns is None:
            raise UserError("csv needs --columns: which of the file's columns hold the path and the label (path="
                            "video,label=class; also start=,end= or start_frame=,end_frame=, split=)")  # fmt: skip
    elif args.annotations is not None and not args.annotations.is_dir():
        raise UserError(f"--annotations {args.annotations}: no such folder; give the folder of the annotation files")
    source, option = (args.frames, "--frames") if args.frames is not None else (args.videos, "--videos")
    if not source.is_dir():
        raise UserError(f"{option} {source}: no such folder; give the folder the videos are in")
    if args.output.exists() and not args.output.is_dir():
        raise UserError(f"--output {args.output}: a file is there; give a folder (made if missing)")
    return args


def check_dataset_options(args: argparse.Namespace) -> None:
    """The options that belong to one dataset are given only with it; exactly one of ``--videos``
    and ``--frames`` (ek100 only) is."""
    for option, value, owner in (("--frames", args.frames, "ek100"), ("--action-pairs", args.action_pairs, "ek100"),
                                 ("--segments", args.segments or None, "charades"),
                                 ("--columns", args.columns, "csv")):  # fmt: skip
        if value is not None and args.name != owner:
            raise UserError(f"{option} is an option of {owner}, not of {args.name}; leave it out")
    if args.frames is not None and args.videos is not None:
        raise UserError("give --videos (video files) or --frames (frame folders), not both")
    if args.frames is None and args.videos is None:
        frames = " (or --frames: the folder of the frame folders)" if args.name == "ek100" else ""
        raise UserError(f"{args.name} needs --videos: the folder the videos are in{frames}")


@entry_point
def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = parse_args(argv)
    from harness.datasets.common import VideoIndex, write_converted
    from harness.datasets.segments import Segments, write_segments

    module = importlib.import_module(f"harness.datasets.{CONVERTERS[args.name]}")
    source = args.frames or args.videos
    if args.name == "folders":
        converted = module.convert(args.videos, args.val_fraction, args.seed)
    elif args.name in WITH_SPLITS:
        converted = module.convert(args.annotations, args.split)
    elif args.name == "ek100":
        converted = module.convert(args.annotations, args.frames is not None, args.action_pairs or "all")
    elif args.name == "charades":
        converted = module.convert(args.annotations, args.segments)
    elif args.name == "csv":
        converted = module.convert(args.annotations, module.parse_columns(args.columns), args.val_fraction, args.seed)
    else:
        converted = module.convert(args.annotations)
    if isinstance(converted, Segments):
        # EPIC-KITCHENS is looked up folder by folder (its frame folders hold millions of files)
        find = module.VideoFinder(source, args.frames is not None) if args.name == "ek100" else VideoIndex(source).find
        lines, listed = write_segments(converted, find, args.output)
    else:
        lines, listed = write_converted(converted, source, args.output)
    for line in lines:
        print(line)
    if listed == 0:
        option = "--frames" if args.frames is not None else "--videos"
        raise RunFailed(f"no annotated video was found below {option} {source} (see "
                        f"{args.output / 'missing.txt'}); give the folder holding the video files")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
