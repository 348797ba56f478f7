"""Run by ``torchrun`` from test_shipped_configs.py: train, resume and compare ranks for several configs.

    torchrun --nproc-per-node 2 tests/parallel/config_driver.py OUT NAME:CONFIG_A:CONFIG_B ...

For each entry, CONFIG_A trains one epoch, CONFIG_B (the same run with one more epoch, same folder)
resumes from its checkpoint. Every rank writes ``OUT/<NAME>_r{rank}.json``: the weights' digest
before and after, where B resumed, and the EMA's digest when the run has one. Several configs share
one process group, so the launcher's start-up cost is paid once per strategy.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from harness.config import load_config  # noqa: E402
from harness.training import Trainer  # noqa: E402
from tests.parallel.driver import digest  # noqa: E402


def run(out: Path, name: str, config_a: str, config_b: str) -> None:
    started = time.perf_counter()
    first = Trainer(load_config(config_a))
    built = time.perf_counter()
    result = {"initial": digest(first.strategy.full_model_state(first.model))}
    result["parameters"] = first.parameter_counts()
    if first.ema is not None:  # the average starts as the weights: its shards reassemble into them
        whole = first.strategy.full_model_state(first.model)
        average = first.ema.full_state(first.strategy, first.model)
        result["ema_starts_as_weights"] = all(torch.equal(average[k], whole[k].float()) for k in average)
    first.fit()
    first.strategy.barrier()
    resumed = Trainer(load_config(config_b))
    result["resumed_at_step"] = resumed.state.step
    resumed.fit()
    result["final"] = digest(resumed.strategy.full_model_state(resumed.model))
    result["steps"] = resumed.state.step
    if resumed.ema is not None:
        result["ema"] = digest(resumed.ema.full_state(resumed.strategy, resumed.model))
    result["seconds"] = {"build": built - started, "total": time.perf_counter() - started}
    rank = resumed.strategy.rank
    (out / f"{name}_r{rank}.json").write_text(json.dumps(result))
    resumed.strategy.barrier()


def main(argv: list[str]) -> None:
    out, *entries = argv
    for entry in entries:
        name, config_a, config_b = entry.split(":")
        run(Path(out), name, config_a, config_b)


if __name__ == "__main__":
    main(sys.argv[1:])
