"""Compiled blocks versus eager: training-step time, compile time, and equal outputs, in one run.

The model is built as the trainer builds it (``harness.training.assemble.build_model``: encoder +
attentive classifier, 400 classes); ``model.compile_model`` compiles each transformer block in
place (regional compilation: compile time does not grow with depth). For each model and dtype:
one eager copy and one compiled copy of the same weights; their forward outputs are compared,
then steps (fwd + bwd + AdamW, 16 frames x 224 px) alternate between the two so that the
machine's load drifts over both alike. Printed: median step seconds of each, the ratio, and the
compile time (the first compiled step minus an eager step).

    python bench/bench_compile.py [--models vit_small vit_base] [--dtypes fp32 bf16] [--steps 3]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import time

import torch

from harness.config import load_config
from harness.training.assemble import build_model
from harness.training.optim import build_optimizer


def make(name: str, frames: int, size: int):
    config = load_config(None, [f"model.model_name={name}", f"data.crop_size={size}", f"data.dataset_fpcs=[{frames}]",
                                "meta.finetune_encoder=true", "meta.load_encoder=false"])  # fmt: skip
    torch.manual_seed(0)
    return config, build_model(config, 400)


def timed_step(model, optimizer, clips: torch.Tensor, labels: torch.Tensor, bf16: bool) -> float:
    """Seconds of one training step."""
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
        loss = torch.nn.functional.cross_entropy(model(clips).float(), labels)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def measure(name: str, bf16: bool, args) -> tuple[float, float, float, float]:
    """Eager and compiled median step seconds, compile seconds, largest forward difference."""
    config, eager = make(name, args.frames, args.size)
    compiled = copy.deepcopy(eager)
    for block in compiled.encoder.blocks:
        block.compile()  # exactly what model.compile_model does (training/model_parts.py)
    clips = torch.randn(args.batch, 1, 3, args.frames, args.size, args.size)
    labels = torch.randint(0, 400, (args.batch,))
    cpu = torch.device("cpu")
    runs = [(eager, build_optimizer(config.optimization, eager, cpu)),
            (compiled, build_optimizer(config.optimization, compiled, cpu))]  # fmt: skip
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):  # the same weights
        difference = (eager(clips).float() - compiled(clips).float()).abs().max().item()
    timed_step(*runs[0], clips, labels, bf16)  # warm-up
    first_compiled = timed_step(*runs[1], clips, labels, bf16)  # compiles every block (forward and backward)
    times: list[list[float]] = [[], []]
    for _ in range(args.steps):  # alternating: the machine's load drifts over both alike
        for index, run in enumerate(runs):
            times[index].append(timed_step(*run, clips, labels, bf16))
    eager_s, compiled_s = statistics.median(times[0]), statistics.median(times[1])
    return eager_s, compiled_s, first_compiled - eager_s, difference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["vit_small", "vit_base"])
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch {args.batch}, "
          f"{args.frames}x{args.size}, fwd+bwd+AdamW")  # fmt: skip
    print(f"{'model':<10} {'dtype':<5} {'eager s':>8} {'compiled s':>10} {'speed-up':>8} {'compile s':>9} "
          f"{'max |diff| fwd':>14}")  # fmt: skip
    for name in args.models:
        for dtype in args.dtypes:
            eager_s, compiled_s, compile_s, difference = measure(name, dtype == "bf16", args)
            print(f"{name:<10} {dtype:<5} {eager_s:>8.2f} {compiled_s:>10.2f} {eager_s / compiled_s:>7.2f}x "
                  f"{compile_s:>9.1f} {difference:>14.2e}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
