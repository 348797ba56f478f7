"""Train a video classifier: ``python -m harness.train --config CFG [section.key=value ...]``.

Also runs as a script (``python harness/train.py``, ``deepspeed harness/train.py``,
``torchrun harness/train.py``). Rerunning the same command in the same run folder resumes.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:
    # Run as a file: put the repository root (not harness/) first on the path, so that our
    # modules never shadow the standard library and ``import harness`` finds this checkout.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402

from harness.config import argument_parser, config_from_args  # noqa: E402
from harness.config.arguments import log_config_notes  # noqa: E402
from harness.core.errors import entry_point  # noqa: E402


@entry_point
def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    parser = argument_parser("harness-train", __doc__)
    # The deepspeed launcher passes --local_rank=N; the rank comes from the environment anyway.
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    config = config_from_args(parser.parse_args(argv))
    if os.environ.get("WANDB_SWEEP_ID") and os.environ.get("WANDB_RUN_ID"):
        # Run by a W&B sweep agent: each of its runs trains in its own folder under ``folder``
        # (the same folder would resume the previous run of the sweep instead of training anew).
        import dataclasses

        config = dataclasses.replace(config, folder=str(Path(config.folder) / os.environ["WANDB_RUN_ID"]))
    from harness.training import Trainer
    from harness.training.tracking.logger import setup_console

    setup_console(config.logging.level, int(os.environ.get("RANK", "0")) == 0)
    log = logging.getLogger("harness.train")
    log_config_notes(config, log)
    trainer = Trainer(config)
    try:
        trainer.fit()
    finally:
        trainer.strategy.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
