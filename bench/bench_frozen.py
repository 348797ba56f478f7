"""Frozen-encoder probe training: the encoder under ``no_grad`` (the harness's path) versus under
``torch.inference_mode`` (``VideoClassifier.frozen_inference_mode``), side by side in one run,
with 1 and 20 probe heads.

A step is what the trainer runs with ``meta.finetune_encoder: false``: uint8 clips normalised on
the device, the frozen encoder's forward, every head's forward and backward, AdamW on the heads.
fp32, and bf16 under autocast (``meta.dtype: bfloat16``). The two paths alternate step by step on
the same model and batch.

    python bench/bench_frozen.py [--model vit_small] [--heads 1 20] [--steps 4]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch

from harness.data.transforms import normalize_clips
from harness.models import AttentiveClassifier, MultiHeadClassifier, VideoClassifier, create_encoder


def build(name: str, heads: int, frames: int, size: int, classes: int) -> VideoClassifier:
    torch.manual_seed(0)
    encoder = create_encoder(name, img_size=size, num_frames=frames)
    probes = [AttentiveClassifier(encoder.embed_dim, classes, encoder.num_heads, 1) for _ in range(heads)]
    return VideoClassifier(encoder, probes[0] if heads == 1 else MultiHeadClassifier(probes), freeze_encoder=True)


def timed_step(model, optimizer, clips, labels, bf16: bool) -> float:
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
        logits = model(normalize_clips(clips))
    per_head = logits.unbind(1) if logits.dim() == 3 else [logits]
    loss = sum(torch.nn.functional.cross_entropy(head.float(), labels) for head in per_head)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_small")
    parser.add_argument("--heads", nargs="+", type=int, default=[1, 20])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--classes", type=int, default=400)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; frozen {args.model}, "
          f"{args.frames}x{args.size}, batch {args.batch}, {args.classes} classes, depth-1 heads; "
          f"median of {args.steps} steps")  # fmt: skip
    print(f"{'dtype':<5} {'heads':>5} {'no_grad s':>9} {'inference_mode s':>16} {'speed-up':>8}")
    clips = torch.randint(0, 256, (args.batch, 1, 3, args.frames, args.size, args.size), dtype=torch.uint8)
    labels = torch.randint(0, args.classes, (args.batch,))
    for dtype in ("fp32", "bf16"):
        for heads in args.heads:
            model = build(args.model, heads, args.frames, args.size, args.classes).train()
            optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
            times: dict[bool, list[float]] = {False: [], True: []}
            for step in range(args.steps + 1):
                for fast in (False, True):
                    model.frozen_inference_mode = fast
                    seconds = timed_step(model, optimizer, clips, labels, dtype == "bf16")
                    if step:  # the first of each is a warm-up
                        times[fast].append(seconds)
            before, after = statistics.median(times[False]), statistics.median(times[True])
            print(f"{dtype:<5} {heads:>5} {before:>9.2f} {after:>16.2f} {before / after:>7.2f}x", flush=True)


if __name__ == "__main__":
    main()
