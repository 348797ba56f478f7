"""Trainer benchmark: harness training step versus a bare PyTorch loop, and demo clips/s.

1. Step overhead: the same model (built by the harness from the config), the same pre-loaded
   float batch, the same AdamW parameter groups and gradient clipping. The harness step is
   ``Trainer.train_step`` plus the schedule update (autocast context, strategy backward/step,
   on-device metric sums, no host sync); the bare loop is forward, cross-entropy, backward,
   clip, step, zero_grad. The two alternate step by step so machine noise hits both alike;
   the ratio of medians is printed (aim: <= 1.02).
2. End to end: one epoch of the built-in demo config with data loading (decode, augment, collate,
   normalise) versus the same number of steps on a pre-loaded batch; clips/s of both and their
   ratio (how much the data pipeline slows training).

    python bench/bench_train.py [--steps 30] [--model vit_tiny --depth 12 --crop 96 --frames 8]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from harness.config import load_config
from harness.data.synthetic import make_demo_dataset
from harness.training import Trainer
from harness.training.evaluation import to_model_input
from harness.training.optim import build_adamw, param_groups

DEMO = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"


def build_trainer(root: Path, folder: Path, *overrides: str) -> Trainer:
    base = [
        f"folder={folder}",
        f"data.datasets=[{root / 'train.csv'}]",
        f"data.val_datasets=[{root / 'val.csv'}]",
        "logging.progress_bar=false",
        "logging.log_every=1000000",
        "meta.load_checkpoint=false",
    ]
    return Trainer(load_config(DEMO, [*base, *overrides]))


def step_overhead(trainer: Trainer, steps: int) -> tuple[float, float]:
    """Median seconds per step: (harness, bare loop), interleaved."""
    batch = next(iter(trainer.train_loader))
    batch = batch._replace(clips=to_model_input(batch.clips, torch.device("cpu")))  # both get floats
    bare_model = copy.deepcopy(trainer.model)
    opt = trainer.config.optimization
    bare_optimizer = build_adamw(param_groups(bare_model), tuple(opt.betas), opt.eps, torch.device("cpu"))
    for group in bare_optimizer.param_groups:
        group["lr"], group["weight_decay"] = opt.lr, opt.weight_decay * group["wd_scale"]

    def harness_step() -> None:
        trainer.schedule.apply(trainer.optimizer, trainer.state.step)
        trainer.train_step([batch])
        trainer.state.step += 1

    def bare_step() -> None:
        loss = F.cross_entropy(bare_model(batch.clips), batch.labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(bare_model.parameters(), opt.clip_grad)
        bare_optimizer.step()
        bare_optimizer.zero_grad(set_to_none=True)

    times = {"harness": [], "bare": []}
    for index in range(steps + 2):  # two warm-up rounds
        order = (("harness", harness_step), ("bare", bare_step))
        for name, step in order if index % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            step()
            if index >= 2:
                times[name].append(time.perf_counter() - start)
    return statistics.median(times["harness"]), statistics.median(times["bare"])


def end_to_end(trainer: Trainer) -> tuple[float, float]:
    """clips/s for one demo epoch with data loading (the second: workers already started), and
    for the same steps on one loaded batch."""
    batch_size = trainer.config.data.batch_size
    trainer.train_epoch(0)
    trainer.state.batch_in_epoch = 0
    start = time.perf_counter()
    trainer.train_epoch(1)
    with_data = trainer.steps_per_epoch * batch_size / (time.perf_counter() - start)
    batch = next(iter(trainer.train_loader))
    start = time.perf_counter()
    for _ in range(trainer.steps_per_epoch):
        trainer.train_step([batch])
    compute_only = trainer.steps_per_epoch * batch_size / (time.perf_counter() - start)
    return with_data, compute_only


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--model", default="vit_tiny")
    parser.add_argument("--depth", type=int, default=12)
    parser.add_argument("--crop", type=int, default=96)
    parser.add_argument("--frames", type=int, default=8)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "demo_data"
        make_demo_dataset(root, progress=False)
        trainer = build_trainer(
            root,
            Path(tmp) / "overhead",
            f"model.model_name={args.model}",
            f"model.depth={args.depth}",
            f"data.crop_size={args.crop}",
            f"data.dataset_fpcs=[{args.frames}]",
            f"data.val_dataset_fpcs=[{args.frames}]",
        )
        harness, bare = step_overhead(trainer, args.steps)
        print(f"step overhead: {args.model} depth {args.depth}, {args.frames}x{args.crop}px, batch "
              f"{trainer.config.data.batch_size}, fp32, {args.steps} interleaved steps")  # fmt: skip
        print(f"  harness {harness * 1e3:8.1f} ms   bare loop {bare * 1e3:8.1f} ms   ratio {harness / bare:.3f}")
        demo = build_trainer(root, Path(tmp) / "demo")
        with_data, compute_only = end_to_end(demo)
        print(f"demo config end to end ({demo.config.data.num_workers} workers, {demo.steps_per_epoch} steps):")
        print(f"  with data loading {with_data:7.1f} clips/s   pre-loaded batch {compute_only:7.1f} clips/s   "
              f"ratio {with_data / compute_only:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
