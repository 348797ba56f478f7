"""Features of videos for retrieval, deduplication, clustering, temporal localisation:
``python -m harness.embed MODEL INPUT... --output DIR``.

``MODEL`` is anything ``harness.predict`` reads (a run folder, a checkpoint, an exported or Hugging
Face classifier directory) or an encoder alone: a V-JEPA 2 pretraining checkpoint (``encoder`` /
``target_encoder``), a VideoMAE checkpoint (both need ``--model-name``, e.g. vit_large_rope), a
Hugging Face ``VJEPA2Model`` / ``VideoMAEModel`` directory. ``INPUT``s are as predict's: video and
image files, folders, listings, shard manifests.

Features (``--features``, several with commas): ``pooled`` (the mean of the encoder's output
tokens), ``probe`` (the classifier's pooled vector before its linear layer), ``levels`` (the mean of
the normalised tokens after each ``--levels`` block), ``tokens`` (every token, on its grid). A
video's clips and views are averaged (tokens keep every clip); ``--window-seconds`` embeds each
window. Output in ``DIR``: shard files of ``--rows-per-shard`` rows (``.safetensors`` or ``.npy``),
``index.csv`` (video, window, start_s, end_s, shard, row, error) and ``embeddings.json``. A stopped
run continues where it stopped when the same command is run again; under ``torchrun`` the ranks
share the shards.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from harness.core.crop import parse_crop
from harness.core.errors import UserError, entry_point
from harness.core.fileio import check_output_folder
from harness.core.options import add_video_options, check_video_options

FEATURES = ("pooled", "probe", "levels", "tokens")  # (harness.embed.features.FEATURES, without importing torch)


def _crop(text: str) -> int | list[int]:
    try:
        return parse_crop(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _list(kind: type, what: str):
    def parse(text: str) -> list:
        try:
            values = [kind(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what}: expected a comma-separated list, got {text!r}") from None
        if not values:
            raise argparse.ArgumentTypeError(f"{what}: empty")
        return values

    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line, checked (a bad flag is a :class:`UserError`: one line, exit 2)."""
    parser = argparse.ArgumentParser(prog="harness-embed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("model", help="run folder, checkpoint, exported or Hugging Face directory, or encoder file")
    parser.add_argument("inputs", nargs="+", help="video files, folders, listings or shard manifests")
    parser.add_argument("--output", type=Path, required=True, help="folder for the shards, index.csv, embeddings.json")
    parser.add_argument("--features", type=_list(str, "--features"), default=["pooled"],
                        help=f"comma-separated, of {', '.join(FEATURES)} (default pooled)")  # fmt: skip
    parser.add_argument("--levels", type=_list(int, "--levels"), default=None,
                        help="blocks (0-based) the levels feature reads, e.g. 5,11,17,23")  # fmt: skip
    parser.add_argument("--normalize", choices=("l2",), default=None, help="scale every vector to unit length")
    parser.add_argument("--format", choices=("safetensors", "npy"), default="safetensors", help="shard files")
    parser.add_argument("--rows-per-shard", type=int, default=4096, help="rows per shard file (default 4096)")
    parser.add_argument("--overwrite", action="store_true", help="replace the embeddings of another command in DIR")
    add_video_options(parser, "embed")
    parser.add_argument("--frames", type=int, default=None, help="frames per clip (default: the model's, or 16)")
    parser.add_argument(
        "--crop-size",
        type=_crop,
        default=None,
        help="crop in pixels: one side (224) or height x width (224x320) (default: the model's)",
    )
    encoder = parser.add_argument_group("an encoder alone (a file or Hugging Face encoder directory)")
    encoder.add_argument("--model-name", default=None, help="its registered name, e.g. vit_large_rope, videomae_base")
    encoder.add_argument("--patch-size", type=int, default=None, help="spatial patch (default: the directory's, or 16)")
    encoder.add_argument("--tubelet-size", type=int, default=None, help="frames per temporal patch (default 2)")
    encoder.add_argument("--checkpoint-key", default=None, help="its key in the file (default: target_encoder)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    args = parser.parse_args(argv)
    check(args)
    return args


def check(args: argparse.Namespace) -> None:
    """The arguments' values, before any model or video is read."""
    check_video_options(args, ("rows_per_shard", "frames", "patch_size", "tubelet_size"))  # (crop: _crop)
    unknown = [name for name in args.features if name not in FEATURES]
    if unknown:
        raise UserError(f"--features {','.join(unknown)}: not a feature; choose from {', '.join(FEATURES)}")
    args.features = list(dict.fromkeys(args.features))
    if ("levels" in args.features) != (args.levels is not None):
        raise UserError("--levels goes with --features levels (the blocks it reads): give both, e.g. "
                        "--features pooled,levels --levels 5,11,17,23")  # fmt: skip
    check_output_folder(args.output, UserError, "--output")


@entry_point
def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from harness.embed.run import run

    counts = run(args)
    if counts is None:  # another rank: rank 0 reports
        return 0
    print(f"embedded {counts['embedded']} {'windows' if args.window_seconds else 'videos'}, {counts['failed']} "
          f"unreadable, in {counts['shards']} shards; wrote {args.output}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
