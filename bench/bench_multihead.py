"""Multi-head probe benchmark: N heads from one frozen-encoder pass vs N separate single-head steps.

V-JEPA 2 trains a grid of probe heads (``multihead_kwargs``, 20 in its K400 config) on a frozen
encoder. Training them as N separate runs repeats the encoder forward N times; the harness runs
the encoder once per batch and all heads on its tokens. Measured in one run, on one machine:
the step time of one training step (frozen encoder forward + heads fwd/bwd + each head clipped on
its own gradient norm + AdamW) with 1 head
and with N heads, for pooler depths 1 and 4; N separate steps cost N x the 1-head step.

    python bench/bench_multihead.py [--model vit_small] [--heads 1 4 20] [--depths 1 4] [--steps 2]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from harness.models import AttentiveClassifier, MultiHeadClassifier, VideoClassifier, create_encoder
from harness.parallel.head_steps import clip_per_head
from harness.training.optim import param_groups

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_model import median_step_seconds  # noqa: E402


def build(model: str, heads: int, depth: int, frames: int, size: int, classes: int) -> VideoClassifier:
    torch.manual_seed(0)
    encoder = create_encoder(model, img_size=size, num_frames=frames)
    probes = [AttentiveClassifier(encoder.embed_dim, classes, encoder.num_heads, depth) for _ in range(heads)]
    return VideoClassifier(encoder, probes[0] if heads == 1 else MultiHeadClassifier(probes), freeze_encoder=True)


def step_time(
    model: VideoClassifier, steps: int, batch: int, frames: int, size: int, classes: int, clip: float | None = 1.0
) -> float:
    """Median seconds of one optimizer step over every head (each head clipped on its own
    gradient norm to ``clip``, as the trainer does; None: no clipping)."""
    optimizer = torch.optim.AdamW(param_groups(model), lr=1e-4)
    clips = torch.randn(batch, 1, 3, frames, size, size)
    labels = torch.randint(0, classes, (batch,))
    model.train()

    def step() -> None:
        logits = model(clips)
        per_head = logits.unbind(1) if logits.dim() == 3 else (logits,)
        loss = sum(torch.nn.functional.cross_entropy(head, labels) for head in per_head)
        loss.backward()
        clip_per_head(optimizer, clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return median_step_seconds(step, steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_small")
    parser.add_argument("--heads", nargs="+", type=int, default=[1, 4, 20])
    parser.add_argument("--depths", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--classes", type=int, default=400)
    parser.add_argument("--clip", type=float, default=1.0, help="per-head gradient clipping (0: off)")
    args = parser.parse_args()
    shape = (args.steps, args.batch, args.frames, args.size, args.classes, args.clip or None)
    print(f"threads={torch.get_num_threads()}  frozen {args.model}, {args.frames}x{args.size}, batch {args.batch}, "
          f"{args.classes} classes, fp32, fwd+bwd+clip per head {args.clip or 'off'}+AdamW; "
          f"median of {args.steps} steps")  # fmt: skip
    print(f"{'depth':>5} {'heads':>5} {'one pass s':>10} {'N separate s':>12} {'speed-up':>8} {'s/head':>7}")
    for depth in args.depths:
        single = None
        for heads in sorted(args.heads):
            seconds = step_time(build(args.model, heads, depth, args.frames, args.size, args.classes), *shape)
            if heads == 1:
                single = seconds
            if single is None:
                single = step_time(build(args.model, 1, depth, args.frames, args.size, args.classes), *shape)
            separate = heads * single
            print(f"{depth:>5} {heads:>5} {seconds:>10.2f} {separate:>12.2f} {separate / seconds:>7.2f}x "
                  f"{seconds / heads:>7.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
