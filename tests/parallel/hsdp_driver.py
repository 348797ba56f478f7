"""Run by ``torchrun`` from test_hsdp.py and test_zeropp.py: train several configs in one process
group, keeping what the test compares as tensors (runs of different layouts agree to rounding, not
bit for bit).

    torchrun --nproc-per-node 4 tests/parallel/hsdp_driver.py OUT NAME:CONFIG_A:CONFIG_B ...

For each entry, CONFIG_A trains; CONFIG_B (empty: none) is the same run with more epochs in the
same folder, so it resumes from A's checkpoint (the folder as A left it is copied to
``OUT/<NAME>_after_a`` first, for a resume on another number of ranks). Rank 0 then writes
``OUT/<NAME>.pt``: the whole weights, the whole EMA, the parameter counts, the strategy's
description, every rank's logged losses and gradient norms, the consolidated export of the last
checkpoint, and with an EMA whether evaluation's swap puts the average in and takes it out again
(and rank 0's logits with it in).
"""

from __future__ import annotations

import csv
import shutil
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from harness.config import load_config  # noqa: E402
from harness.export.consolidate import consolidate, load_consolidated  # noqa: E402
from harness.training import Trainer  # noqa: E402
from tests.parallel.config_driver import main, swapped_in  # noqa: E402


def logged(folder: Path, rank: int) -> dict[str, list[float]]:
    with open(folder / f"log_r{rank}.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {column: [float(row[column]) for row in rows] for column in ("loss", "grad_norm")}


def run(out: Path, name: str, config_a: str, config_b: str) -> None:
    trainer = Trainer(load_config(config_a))
    trainer.fit()
    trainer.strategy.barrier()
    if config_b:
        if trainer.strategy.is_main:
            shutil.copytree(trainer.config.folder, out / f"{name}_after_a", ignore=shutil.ignore_patterns(".lock*"))
        trainer.strategy.barrier()
        trainer = Trainer(load_config(config_b))
        trainer.fit()
    strategy = trainer.strategy
    result = {
        "description": strategy.description,
        "parameters": trainer.parameter_counts(),
        "final": strategy.full_model_state(trainer.model),
        "ema": trainer.ema.full_state(strategy, trainer.model) if trainer.ema is not None else None,
    }
    if trainer.ema is not None:
        result.update(swapped_in(trainer, result["ema"], forward=True))
    strategy.barrier()
    if strategy.is_main:
        folder = Path(trainer.config.folder)
        result["logs"] = [logged(folder, rank) for rank in range(strategy.world_size)]
        plain = consolidate(folder / "checkpoints" / "latest", out / f"{name}_plain")
        result["export"] = {k: v.detach().clone() for k, v in load_consolidated(plain).state_dict().items()}
        torch.save(result, out / f"{name}.pt")
    strategy.barrier()


if __name__ == "__main__":
    main(sys.argv[1:], run)
