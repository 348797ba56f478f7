"""Chunk long videos into clips and pack them into WebDataset tar shards.

    python -m harness.prepare --input videos/ --output shards/ [--segment-seconds 10]
        [--fps 30 --short-side 320] [--val-fraction 0.1 | --val-input val.csv] [--shard-size 256]
        [--workers 8] [--chunked] [--part I/N]
    python -m harness.prepare merge --output shards/

``--input`` is a folder of class folders (``root/<class>/*.mp4|webm|mkv|avi``, and sub-folders of
numbered frames, ``root/<class>/<video>/frame_0001.jpg``; labels from the sorted folder names) or a
listing (CSV ``path label``; a path may be a frame folder). Frame folders are encoded to H.264 at
``--frame-fps`` (a folder does not say its frame rate). Videos are split by source into train and
validation (no clip of one video in both), cut into ``--segment-seconds`` segments (stream copy,
cut at key frames; or re-encoded to H.264 at ``--fps`` / ``--short-side`` when asked; with PyAV,
or the ``ffmpeg`` command with ``--cutter ffmpeg``), and packed in parallel into
``<split>/shard-%06d.tar`` files of about ``--shard-size`` MB, each sample ``key.mp4`` +
``key.cls`` + ``key.json``, with ``<split>/manifest.json``. ``--chunked`` packs a listing of
already-chunked clips as they are. Rerunning resumes: finished videos and shards (verified by
checksum) are kept. Unreadable videos are skipped and listed in ``report.json``.

Several machines: ``--part I/N`` (0 <= I < N; by default a SLURM array task's part) prepares
every N-th video into the same --output (shared file system), the train/val split and the label
map computed from the whole input; then ``merge`` writes each split's manifest.json.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from harness.core.errors import entry_point


def build_parser() -> argparse.ArgumentParser:
    """The options of a preparation (``merge`` has its own, see :func:`merge_main`)."""
    parser = argparse.ArgumentParser(prog="harness-prepare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--input", required=True, type=Path, help="folder of class folders, or a listing")
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--val-fraction", type=float, default=0.1, help="share of source videos for validation")
    parser.add_argument("--val-input", type=Path, default=None, help="validation listing/folder (no random split)")
    parser.add_argument("--segment-seconds", type=float, default=10.0)
    parser.add_argument("--min-seconds", type=float, default=None,
                        help="skip shorter videos, remainders (default 1, or --segment-seconds if less)")  # fmt: skip
    parser.add_argument("--fps", type=float, default=None, help="re-encode to this frame rate")
    parser.add_argument("--short-side", type=int, default=None, help="re-encode to this short side (px)")
    parser.add_argument("--frame-fps", type=float, default=None,
                        help="frame rate of the frame folders among the inputs (needed to cut them)")  # fmt: skip
    parser.add_argument("--shard-size", type=float, default=256.0, help="MB per shard")
    parser.add_argument("--shard-samples", type=int, default=None, help="at most this many clips per shard")
    parser.add_argument("--workers", type=int, default=4, help="processes cutting and packing")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunked", action="store_true", help="the listing holds ready clips: pack as they are")
    parser.add_argument("--overwrite", action="store_true",
                        help="the output holds clips cut with other settings: remove them and cut again")  # fmt: skip
    parser.add_argument("--cutter", choices=("auto", "pyav", "ffmpeg"), default="auto",
                        help="auto: PyAV (as fast as ffmpeg re-encoding, faster copying)")  # fmt: skip
    parser.add_argument("--part", default=None, metavar="I/N",
                        help="prepare part I (0..N-1) of N into the same --output, then run `merge` (default: "
                        "the SLURM array task's part, from SLURM_ARRAY_TASK_ID; 0/1 = the whole input)")  # fmt: skip
    return parser


def merge_main(argv: list[str]) -> int:
    """``merge --output DIR``: join the parts' manifests (see :mod:`harness.prepare.merge`)."""
    parser = argparse.ArgumentParser(prog="harness-prepare merge",
                                     description="Join the parts of `harness.prepare --part I/N` runs in --output "
                                     "into one manifest.json per split (and report.json).")  # fmt: skip
    parser.add_argument("--output", required=True, type=Path, help="the --output the parts were prepared into")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from harness.prepare.merge import merge

    print_report(merge(args.output), args.output)
    return 0


@entry_point
def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["merge"]:
        return merge_main(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from harness.data.cutting import Settings
    from harness.prepare.parts import resolve_part
    from harness.prepare.run import prepare

    part = resolve_part(args.part, os.environ)
    settings = Settings(
        segment_seconds=args.segment_seconds,
        min_seconds=min(1.0, args.segment_seconds) if args.min_seconds is None else args.min_seconds,
        fps=args.fps,
        short_side=args.short_side,
        shard_size_mb=args.shard_size,
        seed=args.seed,
        shard_samples=args.shard_samples,
        cutter=args.cutter,
        frame_fps=args.frame_fps,
    )
    if not part.whole:
        print(f"part {part}: then `python -m harness.prepare merge --output {args.output}` once every part is done")
    report = prepare(args.input, args.output, settings, args.val_fraction, args.val_input, args.workers, args.chunked,
                     args.overwrite, part)  # fmt: skip
    print_report(report, args.output)
    return 0


def print_report(report: dict, output: Path) -> None:
    """Clips and shards per split on stdout; the dropped videos (the first 20) on stderr."""
    for split, counts in report["splits"].items():
        print(f"{split}: {counts['clips']} clips in {counts['shards']} shards -> {output / split}")
    skipped = report["skipped"]
    if skipped:
        print(f"WARNING: {len(skipped)} videos were dropped (all listed in {output / 'report.json'}):",
              file=sys.stderr)  # fmt: skip
        for entry in skipped[:20]:
            print(f"  {entry['path']}: {entry['reason']}", file=sys.stderr)
        if len(skipped) > 20:
            print(f"  ... and {len(skipped) - 20} more", file=sys.stderr)
