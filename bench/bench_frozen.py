"""Frozen-encoder probe training: each part of the fast path against the path without it, side by
side in one run (two copies of the same model, stepping in turn), with 1 and 20 probe heads.

A step is the trainer's with ``meta.finetune_encoder: false`` and 2 micro-batches per optimizer
step: uint8 clips normalised on the device, the frozen encoder's forward, every head's forward and
backward, AdamW on the heads. fp32, and bf16 under autocast (``meta.dtype: bfloat16``). Compared:

* ``inference_mode``: the encoder under ``torch.inference_mode`` instead of ``no_grad``
  (``VideoClassifier.frozen_inference_mode``; off in the harness, see its docstring).
* ``held``: the frozen matmul weights held in bf16 (``hold_frozen_weights``; what the trainer does
  for a frozen encoder read from a file) instead of being cast by autocast in every forward.
* ``grouped``: one encoder pass over both micro-batches of a step (``data.encoder_batch_size``).
* ``all``: held + grouped (what a bf16 probe run with ``data.encoder_batch_size`` gets) against the
  harness's frozen path before them.

    python bench/bench_frozen.py [--model vit_small] [--heads 1 20] [--steps 4] [--compare held grouped]

``bench/gpu_check.py`` runs the same comparisons on a GPU (:func:`compare`).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import time

import torch

from harness.data.transforms import normalize_clips
from harness.models import AttentiveClassifier, MultiHeadClassifier, VideoClassifier, create_encoder
from harness.parallel.precision import hold_frozen_weights

#: comparison -> (dtypes it applies to, the path before, the path after)
BASE = {"inference_mode": False, "held": False, "grouped": False}
COMPARISONS = {
    "inference_mode": (("fp32", "bf16"), BASE, BASE | {"inference_mode": True}),
    "held": (("bf16",), BASE, BASE | {"held": True}),
    "grouped": (("fp32", "bf16"), BASE, BASE | {"grouped": True}),
    "all": (("bf16",), BASE, BASE | {"held": True, "grouped": True}),
}


def build(name: str, heads: int, frames: int, size: int, classes: int) -> VideoClassifier:
    torch.manual_seed(0)
    encoder = create_encoder(name, img_size=size, num_frames=frames)
    probes = [AttentiveClassifier(encoder.embed_dim, classes, encoder.num_heads, 1) for _ in range(heads)]
    return VideoClassifier(encoder, probes[0] if heads == 1 else MultiHeadClassifier(probes), freeze_encoder=True)


def prepared(model: VideoClassifier, path: dict, bf16: bool) -> tuple[VideoClassifier, torch.optim.Optimizer]:
    model = copy.deepcopy(model).train()
    model.frozen_inference_mode = path["inference_mode"]
    if path["held"] and bf16:
        hold_frozen_weights(model.encoder, torch.bfloat16)
    return model, torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)


def timed_step(model, optimizer, micro_batches, bf16: bool, grouped: bool) -> float:
    device = micro_batches[0][0].device
    start = time.perf_counter()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    inputs = [(normalize_clips(clips), labels) for clips, labels in micro_batches]
    tokens = None
    if grouped:
        with torch.no_grad(), autocast:
            tokens = model(torch.cat([clips for clips, _ in inputs]), stage="encode").split(len(inputs[0][1]))
    for index, (clips, labels) in enumerate(inputs):
        with autocast:
            if tokens is None:
                logits = model(clips)
            else:
                logits = model(tokens[index], stage="classify", frames=clips.shape[-3])
        per_head = logits.unbind(1) if logits.dim() == 3 else [logits]
        loss = sum(torch.nn.functional.cross_entropy(head.float(), labels) for head in per_head)
        (loss / len(inputs)).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def compare(
    model: VideoClassifier, comparison: str, bf16: bool, micro_batches: list, steps: int
) -> tuple[float, float]:
    """Median step seconds of the path before and after ``comparison`` (stepping in turn, after
    one warm-up step each) on copies of ``model``."""
    _, before, after = COMPARISONS[comparison]
    paths = [(prepared(model, path, bf16), path["grouped"]) for path in (before, after)]
    times: list[list[float]] = [[], []]
    for step in range(steps + 1):
        for index, ((stepped, optimizer), grouped) in enumerate(paths):
            seconds = timed_step(stepped, optimizer, micro_batches, bf16, grouped)
            if step:  # the first of each is a warm-up
                times[index].append(seconds)
    return statistics.median(times[0]), statistics.median(times[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_small")
    parser.add_argument("--heads", nargs="+", type=int, default=[1, 20])
    parser.add_argument("--compare", nargs="+", choices=list(COMPARISONS), default=list(COMPARISONS))
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=2, help="clips per micro-batch (2 micro-batches per step)")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--classes", type=int, default=400)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; frozen {args.model}, "
          f"{args.frames}x{args.size}, 2 micro-batches of {args.batch}, {args.classes} classes, depth-1 heads; "
          f"median of {args.steps} steps")  # fmt: skip
    print(f"{'compare':<14} {'dtype':<5} {'heads':>5} {'before s':>8} {'after s':>8} {'speed-up':>8}")
    shape = (args.batch, 1, 3, args.frames, args.size, args.size)
    micro_batches = [
        (torch.randint(0, 256, shape, dtype=torch.uint8), torch.randint(0, args.classes, (args.batch,)))
        for _ in range(2)
    ]
    for comparison in args.compare:
        for dtype in COMPARISONS[comparison][0]:
            for heads in args.heads:
                model = build(args.model, heads, args.frames, args.size, args.classes)
                first, second = compare(model, comparison, dtype == "bf16", micro_batches, args.steps)
                print(f"{comparison:<14} {dtype:<5} {heads:>5} {first:>8.2f} {second:>8.2f} {first / second:>7.2f}x",
                      flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
