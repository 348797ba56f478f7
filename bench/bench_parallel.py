"""Strategy benchmark on CPU: per-rank model-state bytes and step time of ddp, fsdp and ZeRO 1/2/3.

Starts itself under ``torchrun`` with 2 ranks (gloo). For each strategy: a small video ViT
classifier, fp32, a fixed batch per rank; two warm-up steps, then the bytes of every tensor the
rank holds for the model (weights, gradients, optimizer state, DeepSpeed's flat buffers and fp32
partitions; found by walking the strategy's objects, each storage counted once) right after a
backward pass, next to the planner's formula (``harness/plan/memory.py``), and the median time of 5
steps relative to ddp (ddp runs first and last; the baseline is their mean).

    python bench/bench_parallel.py [--model vit_small --depth 6 --frames 8 --crop 64 --batch 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.strategy_memory import STRATEGIES, ModelShape, measure  # noqa: E402
from harness.plan.memory import model_state_bytes  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_small")
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--batch", type=int, default=2)
    args, _ = parser.parse_known_args()
    if "RANK" not in os.environ:  # start the 2-rank job
        env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", __file__, *sys.argv[1:]]
        sys.exit(subprocess.run(command, env=env).returncode)
    shape = ModelShape(args.model, args.depth, args.frames, args.crop, args.batch)
    results = {}
    for name in [*STRATEGIES, "ddp_again"]:
        results[name] = measure(name.removesuffix("_again"), shape, warmup_steps=2, timed_steps=5)
    rank = int(os.environ["RANK"])
    if rank != 0:
        return
    baseline = (results["ddp"].step_seconds + results["ddp_again"].step_seconds) / 2
    counts = results["ddp"].counts
    print(f"{args.model} depth {args.depth}, {counts.total / 1e6:.1f}M parameters, fp32 AdamW, 2 ranks (gloo), "
          f"batch {args.batch} x {args.frames}x{args.crop}px per rank")  # fmt: skip
    print(f"{'strategy':9} {'held MB':>9} {'planned MB':>10} {'held/ddp':>9} {'1/N':>5} {'step s':>7} {'vs ddp':>7}")
    ddp_bytes = results["ddp"].held
    for name in STRATEGIES:
        held, seconds = results[name].held, results[name].step_seconds
        planned = sum(model_state_bytes(name, counts, 2, "float32")[:3])
        print(f"{name:9} {held / 1e6:9.1f} {planned / 1e6:10.1f} {held / ddp_bytes:9.3f} {0.5:5.2f} "
              f"{seconds:7.3f} {seconds / baseline:7.2f}")  # fmt: skip
    print(
        f"ddp step time, first and last run: "
        f"{results['ddp'].step_seconds:.3f} s, {results['ddp_again'].step_seconds:.3f} s"
    )


if __name__ == "__main__":
    main()
