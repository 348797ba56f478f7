"""Built-in demo: synthetic moving-squares videos -> data pipeline -> tiny ViT classifier on CPU.

    python -m harness.demo [--root demo_data] [--epochs 3]

Generates a small labelled mp4 dataset on first use (the class is the direction of motion, so
beating chance needs temporal modelling), streams it through the real loaders (decode, augment,
uint8 clips normalised after collation), and fits a small video ViT with an attentive probe.
This is a smoke run of the data and model stack; the full trainer (``harness.train``: config,
checkpoints, resume, evaluation artefacts) supersedes it.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from harness.data import ClipSpec, EvalTransform, TrainTransform, VideoClipDataset, build_loader, read_listing
from harness.data.synthetic import make_demo_dataset
from harness.data.transforms import normalize_clips
from harness.models import AttentiveClassifier, VideoClassifier, create_encoder


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="demo_data", help="dataset folder (generated when empty)")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--videos-per-class", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def evaluate(model: torch.nn.Module, loader) -> float:
    """Top-1 accuracy over the whole loader."""
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for batch in loader:
            logits = model(normalize_clips(batch.clips))
            correct += int((logits.argmax(-1) == batch.labels).sum())
            total += len(batch.labels)
    return correct / max(total, 1)


def main(argv: list[str] | None = None) -> float:
    """Run the demo; returns the final validation accuracy."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    torch.manual_seed(args.seed)
    root = Path(args.root)
    if not (root / "train.csv").is_file():
        print(f"generating the demo dataset in {root}/")
        make_demo_dataset(root, args.classes, args.videos_per_class, max(2, args.videos_per_class // 3), seed=args.seed)
    spec = ClipSpec(8, frame_step=3)
    # The classes are motion directions: a horizontal flip would turn "left" into "right".
    train_set = VideoClipDataset(
        [(read_listing(root / "train.csv"), spec)],
        TrainTransform(64, (0.6, 1.0), horizontal_flip=False, normalize=False),
        seed=args.seed,
    )
    val_set = VideoClipDataset(
        [(read_listing(root / "val.csv"), spec)], EvalTransform(64, normalize=False), train=False
    )
    train_loader = build_loader(train_set, args.batch_size, train=True, num_workers=args.workers, seed=args.seed)
    val_loader = build_loader(val_set, args.batch_size, train=False, num_workers=args.workers)
    num_classes = 1 + max(r.label for r in train_set.records)
    encoder = create_encoder("vit_tiny", img_size=64, num_frames=8, patch_size=16, tubelet_size=2, depth=4)
    model = VideoClassifier(encoder, AttentiveClassifier(encoder.embed_dim, num_classes, num_heads=encoder.num_heads))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    print(
        f"{len(train_set)} train / {len(val_set)} val videos, {num_classes} classes, "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters"
    )
    start = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        train_loader.set_epoch(epoch)
        bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{args.epochs}", unit="batch")
        for batch in bar:
            loss = F.cross_entropy(model(normalize_clips(batch.clips)), batch.labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        accuracy = evaluate(model, val_loader)
        print(f"epoch {epoch + 1}: validation top-1 {accuracy:.1%} (chance {1 / num_classes:.0%})")
    print(
        f"done in {time.perf_counter() - start:.0f} s; decode failures: {train_set.stats()['failed']}; "
        f"data in {root.resolve()}"
    )
    return accuracy


if __name__ == "__main__":
    main()
