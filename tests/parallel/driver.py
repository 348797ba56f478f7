"""Run by ``torchrun`` from test_strategies.py: train, resume, compare ranks, check a frozen encoder.

    torchrun --nproc-per-node 2 tests/parallel/driver.py OUT CONFIG_A CONFIG_B [--frozen CFG PRETRAINED]
        [--extra NAME CFG ...] [--nan CFG BAD_STEP]

CONFIG_A trains epoch 1; CONFIG_B is the same run with 2 epochs in the same folder, so it resumes
from A's checkpoint. Every rank writes ``OUT/result_r{rank}.json``; rank 0 also ``OUT/final.pt``
(the whole model after B, gathered from however it is sharded). ``--nan`` trains CFG with rank 1's
loss NaN at step BAD_STEP (0-based) only: its result, ``nan``, has the skipped-step count and
digests of the whole model (and of its EMA) right before and after that step and at the end.
One launch for all of them: each ``torchrun`` start costs seconds of imports on every rank.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from harness.config import load_config  # noqa: E402
from harness.training import Trainer  # noqa: E402


def digest(state: dict[str, torch.Tensor]) -> str:
    sha = hashlib.sha256()
    for key in sorted(state):
        sha.update(key.encode())
        sha.update(state[key].float().numpy().tobytes())
    return sha.hexdigest()


def nan_run(config, bad: int) -> dict:
    """Train ``config`` with rank 1's loss NaN at step ``bad`` only (see the module docs)."""
    trainer = Trainer(config)
    rank, result = trainer.strategy.rank, {}
    clean_loss, clean_step = trainer.objective.loss, trainer.train_step

    def loss(logits, labels, targets=None):
        value = clean_loss(logits, labels, targets)
        return value * float("nan") if rank == 1 and trainer.state.step == bad else value

    def whole() -> tuple[str, str]:
        return (digest(trainer.strategy.full_model_state(trainer.model)),
                digest(trainer.ema.full_state(trainer.strategy, trainer.model)))  # fmt: skip

    def train_step(micro_batches):
        if trainer.state.step == bad:
            result["before"], result["ema_before"] = whole()
        outcome = clean_step(micro_batches)
        if trainer.state.step == bad:
            result["after"], result["ema_after"] = whole()
        return outcome

    trainer.objective.loss, trainer.train_step = loss, train_step
    trainer.fit()
    result["skipped_steps"], result["steps"] = trainer.state.skipped_steps, trainer.state.step
    result["final"] = digest(trainer.strategy.full_model_state(trainer.model))
    return result


def main(argv: list[str]) -> None:
    out, config_a, config_b, *rest = argv
    out = Path(out)
    result: dict = {}
    Trainer(load_config(config_a)).fit()
    resumed = Trainer(load_config(config_b))
    result["resumed_at_step"] = resumed.state.step
    resumed.fit()
    full = resumed.strategy.full_model_state(resumed.model)
    result["digest"] = digest(full)
    rank = resumed.strategy.rank
    if rank == 0:
        torch.save(full, out / "final.pt")
    while rest:
        flag = rest.pop(0)
        if flag == "--frozen":
            config, pretrained = rest.pop(0), rest.pop(0)
            probe = Trainer(load_config(config))
            probe.fit()
            encoder = torch.load(pretrained, weights_only=True)["encoder"]
            state = probe.strategy.full_model_state(probe.model)
            result["frozen_unchanged"] = all(torch.equal(state[f"encoder.{k}"], v) for k, v in encoder.items())
        elif flag == "--nan":
            config, bad = rest.pop(0), int(rest.pop(0))
            result["nan"] = nan_run(load_config(config), bad)
        elif flag == "--extra":
            name, config = rest.pop(0), rest.pop(0)
            Trainer(load_config(config)).fit()
            result[name] = "done"
    (out / f"result_r{rank}.json").write_text(json.dumps(result))
    dist.barrier()
    resumed.strategy.close()


if __name__ == "__main__":
    main(sys.argv[1:])
