"""Run by ``torchrun`` from test_hsdp.py and test_zeropp.py: train several configs in one process
group, keeping what the test compares as tensors (runs of different layouts agree to rounding, not
bit for bit).

    torchrun --nproc-per-node 4 tests/parallel/hsdp_driver.py OUT NAME:CONFIG_A:CONFIG_B ...

For each entry, CONFIG_A trains; CONFIG_B (empty: none) is the same run with more epochs in the
same folder, so it resumes from A's checkpoint (the folder as A left it is copied to
``OUT/<NAME>_after_a`` first, for a resume on another number of ranks). CONFIG_A ``@OTHER``: B
resumes from a copy of an earlier entry's ``OUT/<OTHER>_after_a`` put in B's folder (another
layout resuming that checkpoint, without training its first epoch again). Rank 0 then writes
``OUT/<NAME>.pt``: the whole weights, the whole EMA, the parameter counts, the strategy's
description, whether FSDP2 offloaded the parameters, every rank's logged losses and gradient
norms, every rank's own pieces (its shards of the parameters, of the optimizer's state and of the
EMA), and the consolidated export of the last checkpoint; for the last ``fit``, its optimizer
steps and how many all-reduces FSDP2 made between HSDP's groups, and the number of FSDP2 units;
with an EMA, whether evaluation's swap puts the average in and takes it out again (and rank 0's
logits with it in).

With ``HSDP_DRIVER_NAN_STEP=S`` in the environment, rank 1's loss is NaN on the last micro-batch
of optimizer step S (0-based): that micro-batch runs no backward and every rank skips the step
(what the earlier micro-batches reduced must not reach another step).
"""

from __future__ import annotations

import csv
import os
import shutil
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.fsdp import FSDPModule

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from harness.config import load_config  # noqa: E402
from harness.export.consolidate import consolidate, load_consolidated  # noqa: E402
from harness.training import Trainer  # noqa: E402
from tests.parallel.config_driver import main, swapped_in  # noqa: E402

GROUP_ALL_REDUCES = [0]  #: dist.all_reduce calls given a process group (see count_group_all_reduces)


def count_group_all_reduces() -> None:
    """Count the ``dist.all_reduce`` calls given a process group: FSDP2's all-reduces between
    HSDP's groups (the harness's own reduce over all ranks and pass none)."""
    original = dist.all_reduce

    def counting(tensor, *args, **kwargs):
        GROUP_ALL_REDUCES[0] += kwargs.get("group", args[1] if len(args) > 1 else None) is not None
        return original(tensor, *args, **kwargs)

    dist.all_reduce = counting


def build(config: str) -> Trainer:
    """A trainer, with rank 1's loss NaN on the last micro-batch of step ``HSDP_DRIVER_NAN_STEP``."""
    trainer = Trainer(load_config(config))
    bad = os.environ.get("HSDP_DRIVER_NAN_STEP")
    if bad is None:
        return trainer
    clean, seen = trainer.objective.loss, {"step": -1, "calls": 0}
    last = trainer.config.optimization.accumulation_steps

    def loss(logits, labels, targets=None):
        step = trainer.state.step
        seen.update(step=step, calls=seen["calls"] + 1 if seen["step"] == step else 1)
        value = clean(logits, labels, targets)
        poisoned = trainer.strategy.rank == 1 and step == int(bad) and seen["calls"] == last
        return value * float("nan") if poisoned else value

    trainer.objective.loss = loss
    return trainer


def logged(folder: Path, rank: int) -> dict[str, list[float]]:
    with open(folder / f"log_r{rank}.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    # (a skipped step logs no gradient norm: NaN)
    return {column: [float(row[column] or "nan") for row in rows] for column in ("loss", "grad_norm")}


def pieces(trainer: Trainer) -> dict[str, torch.Tensor]:
    """This rank's own pieces of the model, the optimizer's state and the EMA (its shards)."""
    strategy, out = trainer.strategy, {}
    for name, param in trainer.model.named_parameters():
        out[f"param {name}"] = strategy.local_tensor(param).detach().cpu().clone()
        for key, value in trainer.optimizer.state.get(param, {}).items():
            if isinstance(value, torch.Tensor) and value.dim() > 0:  # (not Adam's step count)
                out[f"{key} {name}"] = strategy.local_tensor(value).detach().cpu().clone()
    if trainer.ema is not None:
        out |= {f"ema {name}": value.cpu().clone() for name, value in trainer.ema.state_dict().items()}
    return out


def offloaded(model: torch.nn.Module) -> bool:
    """Whether FSDP2 keeps every sharded parameter in host memory (its per-parameter flag: on a
    CPU run the devices cannot tell)."""
    modules = [module for module in model.modules() if isinstance(module, FSDPModule)]
    groups = [module._get_fsdp_state()._fsdp_param_group for module in modules]
    params = [param for group in groups if group is not None for param in group.fsdp_params]
    return bool(params) and all(param.offload_to_cpu for param in params)


def run(out: Path, name: str, config_a: str, config_b: str) -> None:
    if config_a.startswith("@"):  # B resumes another entry's checkpoint, copied into its folder
        folder = Path(load_config(config_b).folder)
        if dist.get_rank() == 0:
            shutil.copytree(out / f"{config_a[1:]}_after_a", folder)
        dist.barrier()
    else:
        trainer = build(config_a)
        if not config_b:
            GROUP_ALL_REDUCES[0], first_step = 0, trainer.state.step
        trainer.fit()
        trainer.strategy.barrier()
    if config_b:
        if not config_a.startswith("@") and trainer.strategy.is_main:
            shutil.copytree(trainer.config.folder, out / f"{name}_after_a", ignore=shutil.ignore_patterns(".lock*"))
        dist.barrier()
        trainer = build(config_b)
        GROUP_ALL_REDUCES[0], first_step = 0, trainer.state.step
        trainer.fit()
    strategy = trainer.strategy
    result = {
        "description": strategy.description,
        "parameters": trainer.parameter_counts(),
        "final": strategy.full_model_state(trainer.model),
        "ema": trainer.ema.full_state(strategy, trainer.model) if trainer.ema is not None else None,
        "pieces": strategy.gather_objects(pieces(trainer)),
        "offloaded": offloaded(trainer.model),
        "steps": trainer.state.step - first_step,
        "skipped_steps": trainer.state.skipped_steps,
        "group_all_reduces": GROUP_ALL_REDUCES[0],
        "units": sum(isinstance(module, FSDPModule) for module in trainer.model.modules()),
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
    count_group_all_reduces()
    main(sys.argv[1:], run)
