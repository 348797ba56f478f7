"""Run by ``torchrun`` from test_head_grid.py: train each config in turn and keep its classifier.

    torchrun --nproc-per-node 2 tests/parallel/grid_driver.py OUT NAME=CONFIG [NAME=CONFIG ...]

Rank 0 writes ``OUT/NAME.pt``: the classifier's whole state after the run (gathered from however
the strategy shards it).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from harness.config import load_config  # noqa: E402
from harness.training import Trainer  # noqa: E402


def main(argv: list[str]) -> None:
    out, *runs = argv
    for run in runs:
        name, config = run.split("=", 1)
        trainer = Trainer(load_config(config))
        trainer.fit()
        state = trainer.strategy.full_model_state(trainer.model)
        if trainer.strategy.is_main:
            classifier = {k.removeprefix("classifier."): v for k, v in state.items() if k.startswith("classifier.")}
            torch.save(classifier, Path(out) / f"{name}.pt")
        trainer.strategy.barrier()
        last = trainer
    last.strategy.close()


if __name__ == "__main__":
    main(sys.argv[1:])
