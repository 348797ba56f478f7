"""Run by ``torchrun`` from test_shipped_configs.py / test_feature_matrix.py: for several configs,
train, resume, compare ranks, consolidate, then delete the run (disk stays bounded).

    torchrun --nproc-per-node 2 tests/parallel/config_driver.py OUT NAME:CONFIG_A:CONFIG_B ...

For each entry, CONFIG_A trains one epoch, CONFIG_B (the same run with one more epoch, same folder)
resumes from its checkpoint and is consolidated (``NAME:CONFIG_A:`` with no CONFIG_B: train and save). Every rank
writes ``OUT/<NAME>_r{rank}.json``: the weights' digest before and after, where B resumed, the
losses logged, the EMA's digest when the run has one, and (rank 0) what consolidation exported.
Several configs share one process group, so the launcher's start-up cost is paid once per strategy.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from harness.config import load_config  # noqa: E402
from harness.export.consolidate import consolidate, load_consolidated  # noqa: E402
from harness.training import Trainer  # noqa: E402
from harness.training.evaluation import to_model_input  # noqa: E402
from harness.training.optim import clean_name  # noqa: E402
from tests.parallel.driver import digest  # noqa: E402


def logged_losses(folder: Path) -> list[list[float]]:
    with open(folder / "log_r0.csv", newline="") as handle:
        return [[int(row["step"]), float(row["loss"])] for row in csv.DictReader(handle)]


def exported(folder: Path, out: Path) -> dict:
    """Consolidate the run's latest checkpoint; the digest of what it exports for the averaged
    (trainable) parameters, and which weights ``model.json`` says it holds."""
    plain = consolidate(folder / "checkpoints" / "latest", out)
    model = load_consolidated(plain)
    state = model.state_dict()
    trained = [clean_name(name) for name, p in model.named_parameters() if p.requires_grad]
    description = json.loads((plain / "model.json").read_text())
    return {"digest": digest({k: state[k] for k in trained}), "weights": description["weights"]}


def forward_once(trainer: Trainer) -> torch.Tensor:
    """The model's logits for this rank's first validation batch (on the host, fp32), in eval mode
    as evaluation runs it (ZeRO-3 traces a training forward and expects its backward next)."""
    trainer.val_loader.set_epoch(0)
    batch = next(iter(trainer.val_loader))
    training = trainer.model.training
    trainer.model.eval()
    with torch.no_grad(), trainer.strategy.precision.autocast():
        clips = to_model_input(batch.clips, trainer.strategy.device)
        logits = trainer.model(clips, batch.clip_indices.to(trainer.strategy.device), trainer.config.data.num_views)
    trainer.model.train(training)
    return logits.detach().float().cpu()


def swapped_in(trainer: Trainer, average: dict[str, torch.Tensor], forward: bool = False) -> dict[str, Any]:
    """What evaluation computes with while the average is swapped in: whether every tracked
    parameter holds ``average`` then (small ones that ZeRO-3 keeps gathered included), and the
    trained weights after. ``forward``: also ``ema_logits``, a forward's logits with the average in
    (which a run of another layout must reproduce: hpZ's forward reads its second partitions, which
    a forward before the swap filled). The feature matrix does not ask: in its ZeRO-3 recipe that
    second forward fails DeepSpeed's prefetch trace check ("tracing error"), a sequence (forward,
    gathers for copies, swap, forward) that evaluation never runs."""
    trained = digest(trainer.strategy.full_model_state(trainer.model))
    plain = trainer.strategy.unwrap(trainer.model)
    # as after a training step: ZeRO-3 holds its small parameters gathered, hpZ its second partitions
    forward_once(trainer)
    checks: dict[str, Any] = {}
    with trainer.ema.applied(plain, trainer.strategy.writing_local):
        if forward:
            checks["ema_logits"] = forward_once(trainer)
        # (copies: a CPU model's state dict holds the parameters themselves, restored on exit)
        swapped = {k: v.clone() for k, v in trainer.strategy.full_model_state(trainer.model).items()}
    # (in the module's dtype: DeepSpeed bf16 computes with bf16 copies of the weights)
    checks["ema_applied"] = all(torch.equal(swapped[k], average[k].to(swapped[k].dtype)) for k in average)
    checks["restored_after_ema"] = digest(trainer.strategy.full_model_state(trainer.model)) == trained
    return checks


def run(out: Path, name: str, config_a: str, config_b: str) -> None:
    started = time.perf_counter()
    first = Trainer(load_config(config_a))
    result = {"initial": digest(first.strategy.full_model_state(first.model))}
    result["parameters"] = first.parameter_counts()
    if first.ema is not None:  # the average starts as the weights: its shards reassemble into them
        whole = first.strategy.full_model_state(first.model)
        average = first.ema.full_state(first.strategy, first.model)
        result["ema_starts_as_weights"] = all(torch.equal(average[k], whole[k].float()) for k in average)
    first.fit()
    first.strategy.barrier()
    resumed = first
    if config_b:
        resumed = Trainer(load_config(config_b))
        result["resumed_at_step"] = resumed.state.step
        resumed.fit()
    result["final"] = digest(resumed.strategy.full_model_state(resumed.model))
    result["steps"] = resumed.state.step
    if resumed.ema is not None:
        average = resumed.ema.full_state(resumed.strategy, resumed.model)
        result["ema"] = digest(average)
        result.update(swapped_in(resumed, average))
    folder = Path(resumed.config.folder)
    resumed.strategy.barrier()
    if resumed.strategy.is_main:
        result["losses"] = logged_losses(folder)
        result["last_eval"] = resumed.state.last_eval
        if config_b:
            result["export"] = exported(folder, out / f"{name}_plain")
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(out / f"{name}_plain", ignore_errors=True)
    result["seconds"] = time.perf_counter() - started
    (out / f"{name}_r{resumed.strategy.rank}.json").write_text(json.dumps(result))
    resumed.strategy.barrier()


def main(argv: list[str], run_entry=run) -> None:
    """Each ``NAME:CONFIG_A:CONFIG_B`` of ``argv`` (after ``OUT``) through ``run_entry`` (hsdp_driver.py
    keeps tensors instead of digests)."""
    out, *entries = argv
    for entry in entries:
        name, config_a, config_b = entry.split(":")
        run_entry(Path(out), name, config_a, config_b)


if __name__ == "__main__":
    main(sys.argv[1:])
