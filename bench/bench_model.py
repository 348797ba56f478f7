"""Model benchmark: forward+backward+AdamW step time and model FLOPs utilisation on this machine.

Measures, in one run: the machine's matmul peak (2048^3, fp32 and bf16), then for each model a
training step (encoder + attentive classifier, fwd + bwd + AdamW) at 16 frames x 224 px,
batch 2, in fp32 and under CPU bf16 autocast. Achieved FLOP/s uses the analytic count of
``harness.models.flops`` (3x forward); MFU = achieved / measured peak of the same dtype.

    python bench/bench_model.py [--models vit_tiny vit_small] [--steps 3]
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable

import torch

from harness.models import AttentiveClassifier, VideoClassifier, create_encoder
from harness.models.flops import encoder_forward_flops, encoder_train_flops
from harness.models.registry import encoder_kwargs


def matmul_peak(dtype: torch.dtype, size: int = 2048, repeats: int = 10) -> float:
    """Best-of FLOP/s of a square matmul in ``dtype``."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def median_step_seconds(step: Callable[[], None], steps: int) -> float:
    """Median seconds of ``step()`` over ``steps`` calls, after one warm-up call (allocators,
    kernels)."""
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return sorted(times[1:])[len(times[1:]) // 2]


def step_time(name: str, dtype: torch.dtype, steps: int, batch: int, frames: int, size: int) -> float:
    """Median seconds of one training step."""
    torch.manual_seed(0)
    encoder = create_encoder(name, img_size=size, num_frames=frames)
    model = VideoClassifier(encoder, AttentiveClassifier(encoder.embed_dim, 400, num_heads=encoder.num_heads))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    clips = torch.randn(batch, 1, 3, frames, size, size)
    labels = torch.randint(0, 400, (batch,))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if dtype == torch.bfloat16 else contextlib.nullcontext()

    def step() -> None:
        with autocast:
            loss = torch.nn.functional.cross_entropy(model(clips), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return median_step_seconds(step, steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["vit_tiny", "vit_small"])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    peaks = {torch.float32: matmul_peak(torch.float32), torch.bfloat16: matmul_peak(torch.bfloat16)}
    print(
        f"threads={torch.get_num_threads()}  matmul peak: fp32 {peaks[torch.float32] / 1e9:.0f} GFLOP/s, "
        f"bf16 {peaks[torch.bfloat16] / 1e9:.0f} GFLOP/s"
    )
    print(f"{'model':<10} {'dtype':<9} {'GFLOP/clip fwd':>14} {'step s':>7} {'GFLOP/s':>8} {'MFU':>6}")
    for name in args.models:
        size_kwargs = encoder_kwargs(name)
        shape = {
            "frames": args.frames,
            "img_size": args.size,
            "patch_size": 16,
            "tubelet_size": 2,
            "embed_dim": size_kwargs["embed_dim"],
            "depth": size_kwargs["depth"],
            "mlp_ratio": size_kwargs["mlp_ratio"],
        }
        forward, train = encoder_forward_flops(**shape), encoder_train_flops(**shape)
        for dtype in (torch.float32, torch.bfloat16):
            seconds = step_time(name, dtype, args.steps, args.batch, args.frames, args.size)
            achieved = train * args.batch / seconds
            label = "fp32" if dtype == torch.float32 else "bf16-amp"
            print(
                f"{name:<10} {label:<9} {forward / 1e9:>14.1f} {seconds:>7.2f} {achieved / 1e9:>8.0f} "
                f"{achieved / peaks[dtype]:>6.1%}"
            )
    peaks_after = matmul_peak(torch.float32)
    print(f"fp32 matmul peak re-measured after the run: {peaks_after / 1e9:.0f} GFLOP/s (noise check)")


if __name__ == "__main__":
    main()
