"""Command-line options that several commands share (argparse only: no torch import)."""

from __future__ import annotations

import argparse

from harness.core.errors import UserError


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


def add_video_options(parser: argparse.ArgumentParser, verb: str) -> None:
    """The options of the commands that run a trained model over new videos (``verb``: predict,
    embed): windows, batching, device and precision, decoder, ``--weights`` and how clips are
    taken (default: as the model's evaluation took them). Check them with :func:`check_video_options`."""
    parser.add_argument("--window-seconds", type=float, default=None, help=f"{verb} each window of this length")
    parser.add_argument("--stride-seconds", type=float, default=None, help="window start every S s (default: W)")
    parser.add_argument("--batch-size", type=int, default=8, help="videos (windows) per forward pass")
    parser.add_argument("--workers", type=int, default=2, help="decoding processes")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--decoder", default="auto", choices=("auto", "torchcodec", "decord", "pyav"))
    add_weights_option(parser)
    parser.add_argument("--num-clips", type=int, default=None, help="clips per video (default: the model's)")
    parser.add_argument("--num-views", type=int, default=None, help="spatial views per clip (default: the model's)")
    parser.add_argument("--frame-step", type=int, default=None, help="take every k-th frame (default: the model's)")
    parser.add_argument("--fps", type=float, default=None, help="sample clips at this rate instead")
    parser.add_argument("--duration", type=float, default=None, help="clips spanning this many seconds instead")
    parser.add_argument("--frame-folders", action="store_true",
                        help="a folder input (or one below it) that holds numbered images is one video of those "
                        "frames, not one input per image (a listing line that is a folder always is one)")  # fmt: skip
    parser.add_argument("--frame-fps", type=float, default=None,
                        help="frame rate of frame folders (for --fps, --duration, --window-seconds)")  # fmt: skip


def check_video_options(args: argparse.Namespace, counts: tuple[str, ...] = ()) -> None:
    """The values of :func:`add_video_options`' options (and of ``counts``, more options that must
    be >= 1 when given); a :class:`UserError` naming the first wrong one."""
    for key in ("batch_size", "num_clips", "num_views", "frame_step", *counts):
        if getattr(args, key) is not None and getattr(args, key) < 1:
            raise UserError(f"--{key.replace('_', '-')} must be >= 1, got {getattr(args, key)}")
    for key in ("window_seconds", "stride_seconds", "fps", "duration", "frame_fps"):
        if getattr(args, key) is not None and not getattr(args, key) > 0:
            raise UserError(f"--{key.replace('_', '-')} must be > 0, got {getattr(args, key)}")
    if args.stride_seconds is not None and args.window_seconds is None:
        raise UserError("--stride-seconds needs --window-seconds (the windows it steps between); give both")
    if args.workers < 0:
        raise UserError(f"--workers must be >= 0, got {args.workers}")
