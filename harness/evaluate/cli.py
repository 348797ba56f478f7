"""Evaluate a trained checkpoint: ``python -m harness.evaluate --config CFG --checkpoint PATH``.

``PATH`` is a harness checkpoint folder, a pointer (``runs/x/checkpoints/best``), a run folder
(its best, else latest checkpoint), or a V-JEPA 2 attentive-probe file (``classifiers`` list;
the encoder then comes from ``meta.pretrain_checkpoint``). Runs the same deterministic
multi-view evaluation as training and writes metrics, predictions and the confusion matrix.
"""

from __future__ import annotations

import sys

from harness.config import argument_parser, config_from_args
from harness.core.errors import UserError, entry_point
from harness.core.fileio import check_output_folder


@entry_point
def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    parser = argument_parser("harness-evaluate", __doc__)
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder, pointer, run folder or probe file")
    parser.add_argument("--out", default=None, help="output folder (default: <folder>/eval_<checkpoint>)")
    args = parser.parse_args(argv)
    if args.out:  # before any work
        check_output_folder(args.out, UserError, "--out")
    config = config_from_args(args)
    from harness.evaluate.run import evaluate_checkpoint

    return evaluate_checkpoint(config, args.checkpoint, args.out)


if __name__ == "__main__":
    sys.exit(main())
