"""Run by ``torchrun`` from test_strategies.py: one rank's loss turns NaN at one step.

    torchrun --nproc-per-node 2 tests/parallel/nan_driver.py OUT CONFIG BAD_STEP

Rank 1's loss is NaN at step BAD_STEP (0-based) only. Every rank writes ``OUT/nan_r{rank}.json``:
the skipped-step count, and digests of the whole model right before and after BAD_STEP and at
the end (gathered from however the strategy shards it).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from harness.config import load_config  # noqa: E402
from harness.training import Trainer  # noqa: E402
from tests.parallel.driver import digest  # noqa: E402


def main(out: str, config: str, bad_step: str) -> None:
    trainer = Trainer(load_config(config))
    rank, bad = trainer.strategy.rank, int(bad_step)
    result: dict = {}
    clean_loss, clean_step = trainer.objective.loss, trainer.train_step

    def loss(logits, labels, targets=None):
        value = clean_loss(logits, labels, targets)
        return value * float("nan") if rank == 1 and trainer.state.step == bad else value

    def train_step(micro_batches):
        if trainer.state.step == bad:
            result["before"] = digest(trainer.strategy.full_model_state(trainer.model))
            result["ema_before"] = digest(trainer.ema.full_state(trainer.strategy, trainer.model))
        outcome = clean_step(micro_batches)
        if trainer.state.step == bad:
            result["after"] = digest(trainer.strategy.full_model_state(trainer.model))
            result["ema_after"] = digest(trainer.ema.full_state(trainer.strategy, trainer.model))
        return outcome

    trainer.objective.loss, trainer.train_step = loss, train_step
    trainer.fit()
    result["skipped_steps"] = trainer.state.skipped_steps
    result["steps"] = trainer.state.step
    result["final"] = digest(trainer.strategy.full_model_state(trainer.model))
    (Path(out) / f"nan_r{rank}.json").write_text(json.dumps(result))
    dist.barrier()
    trainer.strategy.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
