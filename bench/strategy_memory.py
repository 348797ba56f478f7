"""What a rank really holds for the model under ddp, fsdp and ZeRO 1/2/3, next to the planner.

Shared by ``bench/bench_parallel.py`` (bytes and step time) and ``tests/parallel/test_plan.py``
(bytes against ``harness/plan/memory.py`` within 3%). Run inside a 2-rank ``torchrun`` job (gloo, CPU):
each strategy wraps a small video ViT classifier (fp32, AdamW), takes optimizer steps so that
Adam's state exists, runs one more backward, and then the storage of every tensor reachable from
the wrapped model and the optimizer is summed, each storage once: the local shards of weights,
gradients and Adam state, DeepSpeed's flat buffers and fp32 partitions. Nothing is derived from
a formula.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from harness.models import AttentiveClassifier, VideoClassifier, create_encoder
from harness.parallel.build import build_strategy
from harness.plan.memory import ModelCounts
from harness.training.optim import build_adamw, param_groups

# Small communication buckets, so that the bytes measured are the model states, not buffers
# sized for billion-parameter models (ZeRO-3's default 5e8-element gradient buffer is 2 GB), which
# the planner leaves out (they come on top; see harness/plan/memory.py).
BUCKET = 100_000
BUCKETS = {"reduce_bucket_size": BUCKET, "allgather_bucket_size": BUCKET}
STRATEGIES: dict[str, tuple[str, dict | None]] = {
    "ddp": ("ddp", None),
    "fsdp": ("fsdp", None),
    "zero1": ("deepspeed", {"zero_optimization": {"stage": 1, **BUCKETS}}),
    "zero2": ("deepspeed", {"zero_optimization": {"stage": 2, **BUCKETS}}),
    "zero3": ("deepspeed", {"zero_optimization": {"stage": 3, "reduce_bucket_size": BUCKET,
                                                  "stage3_prefetch_bucket_size": BUCKET,
                                                  "stage3_param_persistence_threshold": 0}}),
}  # fmt: skip


@dataclass(frozen=True)
class ModelShape:
    """The small classifier measured: a ``model`` encoder of ``depth`` blocks over clips of
    ``frames`` x ``crop`` px, ``batch`` clips per rank, 100 classes."""

    model: str = "vit_small"
    depth: int = 6
    frames: int = 8
    crop: int = 64
    batch: int = 2


@dataclass(frozen=True)
class Measured:
    """One strategy on this rank: bytes held right after a backward pass, the median seconds of
    the timed steps (0.0 when none were timed) and the model's parameter counts."""

    held: int
    step_seconds: float
    counts: ModelCounts


def held_bytes(*roots: object, depth: int = 6) -> int:
    """Bytes of all tensor storages reachable from ``roots`` (each storage once): modules'
    parameters (their local shard for DTensors), gradients and buffers, and the tensors inside
    dicts, lists and torch/DeepSpeed objects down to ``depth`` levels."""
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


def build_classifier(shape: ModelShape) -> VideoClassifier:
    """The measured model, the same on every rank (seed 0)."""
    torch.manual_seed(0)
    encoder = create_encoder(shape.model, img_size=shape.crop, num_frames=shape.frames, depth=shape.depth)
    return VideoClassifier(encoder, AttentiveClassifier(encoder.embed_dim, 100, num_heads=encoder.num_heads))


def count(model: VideoClassifier) -> ModelCounts:
    """The planner's counts of ``model`` (every parameter trains)."""
    blocks = list(model.encoder.blocks)
    total = sum(p.numel() for p in model.parameters())
    return ModelCounts(total=total, trainable=total,
                       largest_unit=max(sum(p.numel() for p in b.parameters()) for b in blocks),
                       depth=len(blocks), width=model.encoder.embed_dim, mlp_ratio=4.0)  # fmt: skip


def measure(name: str, shape: ModelShape, warmup_steps: int = 1, timed_steps: int = 0) -> Measured:
    """Wrap the model with strategy ``name`` (a key of :data:`STRATEGIES`) in the running process
    group, take ``warmup_steps`` steps, measure the bytes held after one more backward, then time
    ``timed_steps`` steps."""
    kind, ds_config = STRATEGIES[name]
    options = {"config": ds_config, "micro_batch": shape.batch, "clip_grad": 1.0} if kind == "deepspeed" else {}
    strategy = build_strategy(kind, "cpu", "float32", "gloo", options)
    model = build_classifier(shape)
    counts = count(model)
    model, optimizer = strategy.prepare(
        model, lambda m: build_adamw(param_groups(m), (0.9, 0.999), 1e-8, torch.device("cpu"))
    )
    for group in optimizer.param_groups:
        group["lr"] = 1e-4
    generator = torch.Generator().manual_seed(strategy.rank)
    clips = torch.randn(shape.batch, 1, 3, shape.frames, shape.crop, shape.crop, generator=generator)
    labels = torch.randint(0, 100, (shape.batch,), generator=generator)

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

    for _ in range(warmup_steps):
        backward()
        step()
    backward()
    held = held_bytes(model, optimizer)
    step()
    times = []
    for _ in range(timed_steps):
        start = time.perf_counter()
        backward()
        step()
        times.append(time.perf_counter() - start)
    torch.distributed.barrier()
    return Measured(held, statistics.median(times) if times else 0.0, counts)
