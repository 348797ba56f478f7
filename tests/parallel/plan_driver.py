"""Run by ``torchrun`` from test_plan.py: the bytes each strategy really holds on this rank.

    torchrun --nproc-per-node 2 tests/parallel/plan_driver.py OUT

Every rank writes ``OUT/held_r{rank}.json``: the model's counts and, per strategy, the bytes of
every tensor storage reachable from the wrapped model and its optimizer right after a backward
pass (``bench/strategy_memory.py``, which ``bench/bench_parallel.py`` also uses).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.strategy_memory import STRATEGIES, ModelShape, measure  # noqa: E402

# Small enough to run in seconds, large enough that the few bytes outside the model states
# (buffers, DeepSpeed's small communication buckets) stay well under 1% of them.
SHAPE = ModelShape("vit_small", depth=2, frames=4, crop=32, batch=1)


def main(out: Path) -> None:
    result = {}
    for name in STRATEGIES:
        measured = measure(name, SHAPE)
        result[name] = measured.held
        result["counts"] = dataclasses.asdict(measured.counts)
    (out / f"held_r{os.environ['RANK']}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
