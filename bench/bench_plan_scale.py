"""Before and after ``harness.plan --suggest`` for ViT-g at cluster scale, simulated.

For 64, 1024 and 4096 H100s (8 a node, 3600/400 Gbit/s per GPU): the shipped
``configs/vitg16_finetune.yaml``'s recipe under plain FSDP (micro-batch 2, activation
checkpointing on), and the best FSDP/HSDP candidate ``--suggest`` finds for the same global batch,
both run through the simulator (the real FSDP2 code on fake tensors under a fake process group of
the full world). Prints, per scale: simulated / planned memory (the planner's formulas, FSDP2's
padding counted), traffic inside and between nodes, step time and MFU; and the best candidate
overall by the formulas (DeepSpeed's layouts cannot be simulated).

    python bench/bench_plan_scale.py            # ~1-2 min per simulation on a 2-core CPU
    python bench/bench_plan_scale.py --nodes 8  # one scale
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.config import load_config  # noqa: E402
from harness.plan.memory import GIB, count_parameters, plan  # noqa: E402
from harness.plan.simulate import Hardware, Simulation, simulate  # noqa: E402
from harness.plan.suggest import candidates, simulated  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "vitg16_finetune.yaml"
CLASSES = 174


def line(label: str, sim: Simulation, memory: float, planned: float) -> str:
    return (f"{label:34} {memory / GIB:7.2f} {memory / planned:6.2f} {sim.intra_s * 1e3:7.0f} {sim.inter_s * 1e3:7.0f} "
            f"{sim.step_s * 1e3:7.0f} {sim.mfu:5.0%}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, nargs="*", default=[8, 128, 512])
    args = parser.parse_args()
    shipped = load_config(CONFIG, ["distributed.strategy=fsdp"])
    counts = count_parameters(shipped, CLASSES)
    print(f"{shipped.model.model_name}, {counts.total / 1e6:.0f}M parameters; h100, 8 per node, 3600/400 Gbit/s")
    print(f"{'':34} {'GiB':>7} {'sim/pl':>6} {'intra':>7} {'inter':>7} {'step':>7} {'MFU':>5}  (ms)")
    for nodes in args.nodes:
        hardware = Hardware("h100", 8, nodes)
        world = hardware.world
        started = time.perf_counter()
        before = simulate(shipped, hardware, CLASSES)
        planned = next(r for r in plan(shipped, world, CLASSES, counts) if r.strategy == "fsdp").total
        print(line(f"{world:5} ranks, shipped recipe, fsdp", before, sum(before.memory.values()), planned))
        found, tried = candidates(shipped, counts, hardware, 80.0, 0.1)
        best = simulated(shipped, next(c for c in found if c.layout.simulable), CLASSES)
        group = best.layout.group if best.layout.row == "hsdp" else None
        rows = plan(load_config(CONFIG, best.overrides()), world, CLASSES, counts, group)
        planned = next(r for r in rows if r.strategy == best.layout.row).total
        label = f"      suggested: {best.layout.name}, ckpt {best.checkpointing}"
        print(line(label, best.sim, best.memory, planned))
        overall = found[0]
        print(f"      best of {tried} by the formulas: {overall.layout.name} {overall.micro_batch} x "
              f"{overall.accumulation}, checkpointing {overall.checkpointing}: step {overall.sim.step_s * 1e3:.0f} ms, "
              f"MFU {overall.sim.mfu:.0%}; MFU after / before {best.sim.mfu / before.mfu:.2f}; "
              f"{time.perf_counter() - started:.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
