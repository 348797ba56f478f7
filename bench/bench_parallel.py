"""Strategy benchmark on CPU: per-rank model-state bytes and step time of ddp, fsdp and ZeRO 1/2/3.

Starts itself under ``torchrun`` with 2 ranks (gloo). For each strategy: a small video ViT
classifier, fp32, a fixed batch per rank; two warm-up steps, then the bytes of every tensor the
rank holds for the model (weights, gradients, optimizer state, DeepSpeed's flat buffers and fp32
partitions; found by walking the strategy's objects, each storage counted once) right after a
backward pass, next to the planner's formula (``harness/plan.py``), and the median time of 5
steps relative to ddp (ddp runs first and last; the baseline is their mean).

    python bench/bench_parallel.py [--model vit_small --depth 6 --frames 8 --crop 64 --batch 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from harness.models import AttentiveClassifier, VideoClassifier, create_encoder  # noqa: E402
from harness.parallel.strategy import build_strategy  # noqa: E402
from harness.plan import ModelCounts, model_state_bytes  # noqa: E402
from harness.training.optim import build_adamw, param_groups  # noqa: E402

# Small communication buckets, so that the bytes measured are the model states, not buffers
# sized for billion-parameter models (ZeRO-3's default 5e8-element gradient buffer is 2 GB).
BUCKETS = {"reduce_bucket_size": 1_000_000, "allgather_bucket_size": 1_000_000}
STRATEGIES = {
    "ddp": ("ddp", None),
    "fsdp": ("fsdp", None),
    "zero1": ("deepspeed", {"zero_optimization": {"stage": 1, **BUCKETS}}),
    "zero2": ("deepspeed", {"zero_optimization": {"stage": 2, **BUCKETS}}),
    "zero3": (
        "deepspeed",
        {
            "zero_optimization": {
                "stage": 3,
                "reduce_bucket_size": 1_000_000,
                "stage3_prefetch_bucket_size": 1_000_000,
                "stage3_param_persistence_threshold": 0,
            }
        },
    ),
}


def held_bytes(*roots: object, depth: int = 6) -> int:
    """Bytes of all tensor storages reachable from ``roots`` (each storage once)."""
    seen: dict[int, int] = {}
    visited: set[int] = set()

    def visit(obj: object, level: int) -> None:
        if level > depth or id(obj) in visited:
            return
        visited.add(id(obj))
        if isinstance(obj, torch.Tensor):
            local = obj.to_local() if hasattr(obj, "to_local") else obj
            if local.device.type != "meta":
                storage = local.untyped_storage()
                seen[storage.data_ptr()] = storage.nbytes()
            if obj.grad is not None:
                visit(obj.grad, level + 1)
        elif isinstance(obj, torch.nn.Module):
            for tensor in [*obj.parameters(), *obj.buffers()]:
                visit(tensor, level + 1)
        elif isinstance(obj, dict):
            for value in obj.values():
                visit(value, level + 1)
        elif isinstance(obj, (list, tuple, set)):
            for value in obj:
                visit(value, level + 1)
        elif hasattr(obj, "__dict__") and type(obj).__module__.split(".")[0] in ("deepspeed", "torch"):
            for value in vars(obj).values():
                visit(value, level + 1)

    for root in roots:
        visit(root, 0)
    return sum(seen.values())


def build(args) -> VideoClassifier:
    torch.manual_seed(0)
    encoder = create_encoder(args.model, img_size=args.crop, num_frames=args.frames, depth=args.depth)
    return VideoClassifier(encoder, AttentiveClassifier(encoder.embed_dim, 100, num_heads=encoder.num_heads))


def run_strategy(name: str, args) -> tuple[int, float, ModelCounts]:
    kind, ds_config = STRATEGIES[name]
    options = {"config": ds_config, "micro_batch": args.batch, "clip_grad": 1.0} if kind == "deepspeed" else {}
    strategy = build_strategy(kind, "cpu", "float32", "gloo", options)
    model = build(args)
    blocks = list(model.encoder.blocks)
    counts = ModelCounts(
        total=sum(p.numel() for p in model.parameters()),
        trainable=sum(p.numel() for p in model.parameters()),
        largest_unit=max(sum(p.numel() for p in b.parameters()) for b in blocks),
        depth=len(blocks),
        width=model.encoder.embed_dim,
        mlp_ratio=4.0,
    )
    model, optimizer = strategy.prepare(
        model, lambda m: build_adamw(param_groups(m), (0.9, 0.999), 1e-8, torch.device("cpu"))
    )
    for group in optimizer.param_groups:
        group["lr"] = 1e-4
    generator = torch.Generator().manual_seed(strategy.rank)
    clips = torch.randn(args.batch, 1, 3, args.frames, args.crop, args.crop, generator=generator)
    labels = torch.randint(0, 100, (args.batch,), generator=generator)

    def backward() -> None:
        loss = F.cross_entropy(model(clips), labels)
        if kind == "deepspeed":
            model.backward(loss)
        else:
            loss.backward()

    def step() -> None:
        if kind == "deepspeed":
            model.step()
        else:
            strategy.optimizer_step(model, optimizer, 1.0)

    for _ in range(2):
        backward()
        step()
    backward()
    held = held_bytes(model, optimizer)
    step()
    times = []
    for _ in range(5):
        start = time.perf_counter()
        backward()
        step()
        times.append(time.perf_counter() - start)
    torch.distributed.barrier()
    return held, statistics.median(times), counts


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
    results = {}
    for name in [*STRATEGIES, "ddp_again"]:
        results[name] = run_strategy(name.removesuffix("_again"), args)
    rank = int(os.environ["RANK"])
    if rank != 0:
        return
    baseline = (results["ddp"][1] + results["ddp_again"][1]) / 2
    counts = results["ddp"][2]
    print(f"{args.model} depth {args.depth}, {counts.total / 1e6:.1f}M parameters, fp32 AdamW, 2 ranks (gloo), "
          f"batch {args.batch} x {args.frames}x{args.crop}px per rank")  # fmt: skip
    print(f"{'strategy':9} {'held MB':>9} {'planned MB':>10} {'held/ddp':>9} {'1/N':>5} {'step s':>7} {'vs ddp':>7}")
    ddp_bytes = results["ddp"][0]
    for name in STRATEGIES:
        held, seconds, _ = results[name]
        planned = sum(model_state_bytes(name, counts, 2, "float32")[:3])
        print(f"{name:9} {held / 1e6:9.1f} {planned / 1e6:10.1f} {held / ddp_bytes:9.3f} {0.5:5.2f} "
              f"{seconds:7.3f} {seconds / baseline:7.2f}")  # fmt: skip
    print(f"ddp step time, first and last run: {results['ddp'][1]:.3f} s, {results['ddp_again'][1]:.3f} s")


if __name__ == "__main__":
    main()
