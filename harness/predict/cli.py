"""Classify new videos: ``python -m harness.predict MODEL INPUT... [--output predictions.csv]``.

``MODEL`` is a run folder (its best checkpoint), a checkpoint folder or pointer, an exported
directory (``harness.export``) or a Hugging Face V-JEPA 2 classifier directory. Each ``INPUT`` is a
video file, a folder (searched recursively for videos), a listing (``.csv``/``.txt``/``.npy``;
labels are ignored) or a shard manifest (``manifest.json``); any mix, in order.

Clips are taken as the model's evaluation took them (frames per clip, frame step or fps, crop
size, clips and views, normalisation: saved with the model; ``--num-clips`` etc. override) and
one prediction per video is made from all its clips and views, as in evaluation. With
``--window-seconds W [--stride-seconds S]`` each window of a long video gets its own prediction
(with its start and end time) and the video a row ``window=all`` averaging the windows'
probabilities. Output: top-k classes with names and probabilities, as CSV or JSON Lines
(``--output``, by suffix), rows in input order; a video that cannot be read gets a row with its
error. The exit status is 2 only when nothing could be predicted. Under ``torchrun`` the ranks
split the inputs and rank 0 writes the merged file.

``--explain DIR`` shows where an attentive probe's query looked: per video (window, shard sample)
a PNG strip of the frames it saw with the attention drawn over them (``--explain-format
png,gif,mp4`` adds animations), and in the predictions the attention mass per time step
(``attention_over_time``) and the frames each step covers (``attention_frames``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from harness.core.errors import RunFailed, UserError, entry_point
from harness.core.fileio import check_output_file, check_output_folder
from harness.core.options import add_video_options, check_video_options

# The library names that lived here (``from harness.predict.cli import VideoUnits``): forwarded to
# :mod:`harness.predict.predictor` on first use, so that ``--help`` imports neither torch nor decoders.
EXPLAIN_FORMATS = ("png", "gif", "mp4")  #: ``--explain-format``: a strip of frames, animations
FORWARDED = ("Row", "ShardUnits", "Unit", "VideoUnits", "build_units", "collate_units", "collect_inputs",
             "predict_units", "run", "video_aggregates", "window_units", "write_rows")  # fmt: skip


def __getattr__(name: str):
    if name in FORWARDED:
        from harness.predict import predictor

        return getattr(predictor, name)
    raise AttributeError(f"module 'harness.predict.cli' has no attribute {name!r}")


def parse_formats(text: str) -> tuple[str, ...]:
    """``--explain-format png,gif`` -> ``("png", "gif")``; an unknown name or none is a :class:`UserError`."""
    formats = tuple(dict.fromkeys(part.strip().lower() for part in text.split(",") if part.strip()))
    if not formats or any(name not in EXPLAIN_FORMATS for name in formats):
        raise UserError(f"--explain-format {text!r}: give a comma-separated list of {', '.join(EXPLAIN_FORMATS)}")
    return formats


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="harness-predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("model", help="run folder, checkpoint, exported or Hugging Face classifier directory")
    parser.add_argument("inputs", nargs="+", help="video files, folders, listings or shard manifests")
    parser.add_argument("--output", type=Path, default=None, help="predictions file: .csv or .jsonl")
    parser.add_argument("--top-k", type=int, default=5, help="classes per row (default 5)")
    add_video_options(parser, "predict")
    parser.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="multi-label models: list the classes whose probability reaches this (default 0.5)",
    )
    explain = "draw where the attention probe looked into DIR; add its curve over time to the rows"
    parser.add_argument("--explain", type=Path, default=None, metavar="DIR", help=explain)
    formats = "--explain's files: comma-separated of png (a strip of frames), gif, mp4 (default png)"
    parser.add_argument("--explain-format", default=None, metavar="FORMATS", help=formats)
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    args = parser.parse_args(argv)
    check_video_options(args, ("top_k",))
    if not 0 <= args.threshold <= 1:
        raise UserError(f"--threshold must be in [0, 1], got {args.threshold}")
    if args.output is not None and args.output.suffix not in (".csv", ".jsonl", ".json"):
        raise UserError(f"--output {args.output}: use a .csv or .jsonl file")
    if args.explain_format is not None and args.explain is None:
        raise UserError("--explain-format needs --explain DIR (the folder its files go to); give both")
    args.explain_format = parse_formats(args.explain_format or "png")
    if args.explain is not None:
        if args.explain.exists() and not args.explain.is_dir():
            raise UserError(f"--explain {args.explain}: a file is there; give a folder (made if missing)")
        check_output_folder(args.explain, UserError, "--explain")  # makeable and writable, before any work
    if args.output is not None:  # before any prediction is computed
        check_output_file(args.output, UserError, "--output")
    return args


@entry_point
def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from harness.predict.predictor import run, write_rows

    rows, names = run(args)
    if not rows:  # another rank: rank 0 reports
        return 0
    windows = bool(args.window_seconds)
    if args.output is not None:
        write_rows(rows, args.output, names, args.top_k, windows)
    shown = [row for row in rows if not windows or row.window == "all" or row.error]
    for row in shown[:50] if args.output is not None else shown:
        best = ", ".join(f"{names[c]} {100 * p:.1f}%" for c, p in row.top[:3])
        if row.sets:  # a label-set model: each set's best class
            best = ", ".join(f"{name} {top[0][1]} {100 * top[0][2]:.1f}%" for name, top in row.sets)
        if row.labels is not None:  # a multi-label model: the classes at or above the threshold first
            best = f"[{', '.join(names[c] for c in row.labels) or 'none'}] {best}"
        print(f"{row.video}: {best if row.top or row.sets else 'ERROR ' + row.error}")
    if args.output is not None and len(shown) > 50:
        print(f"... ({len(shown) - 50} more in {args.output})")
    failed = sum(1 for row in rows if row.error)
    predicted = len(rows) - failed
    print(f"predicted {predicted} {'rows' if windows else 'videos'}, {failed} unreadable"
          + (f"; wrote {args.output}" if args.output is not None else ""))  # fmt: skip
    if predicted == 0:
        raise RunFailed("nothing could be predicted: every input was unreadable (see the errors above)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
