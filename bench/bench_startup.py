"""Start-up memory and time per strategy: what each rank holds while the model is built, wrapped
and its pretrained encoder loaded, for a large encoder on 2 CPU ranks (gloo).

For ddp, fsdp and DeepSpeed ZeRO-3 (ddp first and last; its figures are their mean), and for fsdp
and ZeRO-3 built the old way too (``-direct``: every rank builds and initialises the whole model
before sharding, which the trainer no longer does), one ``torchrun`` of 2 ranks constructs the
real :class:`harness.training.Trainer` for ``--model`` (default ``vit_huge``, 632M parameters)
with a pretrained encoder file written beforehand, at a toy input size (the input does not change
what start-up holds). Each rank reports the time from its start to a trainer ready for the first
step, its peak resident set (``ru_maxrss``: includes the pages of the memory-mapped pretrained
file, shared by the ranks of a node), the peak of its private memory (``RssAnon`` sampled every 20
ms) and that peak less the private memory of the process with its libraries imported (what
building the run cost). Ratios are against ddp in the same run.

    python bench/bench_startup.py [--model vit_huge] [--no-pretrained] [--first-step]

ZeRO-3 allocates its fp32 master partition, gradient partition and AdamW state at start-up,
which DDP and FSDP2 allocate at the first step: ``--first-step`` compares all three there.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# ZeRO-3 with buckets of 5e7 elements instead of ds_configs/zero3.json's 5e8 (a 2 GB fp32 buffer
# allocated at start-up, sized for GPUs, which would hide what the build itself holds).
ZERO3 = {"zero_optimization": {"stage": 3, "reduce_bucket_size": 50_000_000, "stage3_prefetch_bucket_size": 50_000_000,
                               "stage3_param_persistence_threshold": 100_000}}  # fmt: skip
STRATEGIES = {
    "ddp": ["distributed.strategy=ddp"],
    "fsdp": ["distributed.strategy=fsdp"],
    "zero3": ["distributed.strategy=deepspeed"],  # + distributed.deepspeed.config=<ZERO3 written as JSON>
}


class AnonPeak:
    """The peak of ``RssAnon`` (private resident memory), sampled in a thread."""

    def __init__(self, every: float = 0.02) -> None:
        self.peak, self.every, self.running = 0, every, True
        threading.Thread(target=self.sample, daemon=True).start()

    def sample(self) -> None:
        while self.running:
            with open("/proc/self/status") as handle:
                for line in handle:
                    if line.startswith("RssAnon:"):
                        self.peak = max(self.peak, int(line.split()[1]) * 1024)
            time.sleep(self.every)


def worker(config_path: str, out: str, first_step: bool) -> None:
    """One rank: construct the trainer (and with ``first_step`` run one training step), report
    time and memory."""
    started = time.perf_counter()
    from harness.config import load_config
    from harness.training import Trainer

    if os.environ.get("BENCH_DIRECT_BUILD"):  # the "-direct" rows: every rank builds the whole model first
        from harness.parallel.deepspeed import DeepSpeedStrategy
        from harness.parallel.fsdp import FSDPStrategy

        FSDPStrategy.builds_sharded = False
        DeepSpeedStrategy.builds_sharded = property(lambda self: False)

    anon = AnonPeak()
    time.sleep(0.1)
    baseline = anon.peak  # the process with its libraries imported, before anything is built
    trainer = Trainer(load_config(config_path))
    if first_step:  # gradients and the optimizer state exist from here on
        trainer.train_loader.set_epoch(0)
        trainer.train_step([next(iter(trainer.train_loader))])
    trainer.strategy.barrier()
    seconds = time.perf_counter() - started
    anon.running = False
    rank = trainer.strategy.rank
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    result = {"seconds": seconds, "peak_rss": peak, "peak_anon": max(anon.peak, 1),
              "built": max(anon.peak - baseline, 1)}  # fmt: skip
    Path(out, f"r{rank}.json").write_text(json.dumps(result))


def launch(strategy: str, config: Path, out: Path, first_step: bool) -> dict[str, float]:
    out.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", __file__, "--worker",
               str(config), str(out), *(["--first-step"] if first_step else [])]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO),
           **({"BENCH_DIRECT_BUILD": "1"} if strategy.endswith("-direct") else {})}  # fmt: skip
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode:
        raise SystemExit(f"{strategy} failed:\n{done.stderr[-4000:]}")
    ranks = [json.loads((out / f"r{r}.json").read_text()) for r in range(2)]
    return {key: max(r[key] for r in ranks) for key in ranks[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vit_huge")
    parser.add_argument("--no-pretrained", action="store_true")
    parser.add_argument(
        "--first-step",
        action="store_true",
        help="measure through one training step (gradients and AdamW state allocated)",
    )
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker, args.first_step)
        return
    import torch

    from harness.config import load_config, save_config
    from harness.data.synthetic import make_demo_dataset
    from harness.models import create_encoder

    root = Path(tempfile.mkdtemp(prefix="bench_startup_"))
    make_demo_dataset(root / "data", seed=0)
    extra = []
    if not args.no_pretrained:
        torch.manual_seed(0)
        encoder = create_encoder(args.model, img_size=32, num_frames=4)
        torch.save({"encoder": encoder.state_dict()}, root / "encoder.pt")
        del encoder
        extra = [f"meta.pretrain_checkpoint={root / 'encoder.pt'}"]
    (root / "zero3.json").write_text(json.dumps(ZERO3))
    STRATEGIES["zero3"].append(f"distributed.deepspeed.config={root / 'zero3.json'}")
    results = {}
    for strategy in ["ddp", "fsdp", "fsdp-direct", "zero3", "zero3-direct", "ddp"]:
        config = root / f"{strategy}.yaml"
        save_config(load_config(None, [
            f"folder={root / strategy}", f"data.datasets=[{root / 'data/train.csv'}]",
            f"data.val_datasets=[{root / 'data/val.csv'}]", "data.dataset_fpcs=[4]", "data.val_dataset_fpcs=[4]",
            "data.frame_step=2", "data.crop_size=32", "data.batch_size=1", "data.num_workers=0",
            f"model.model_name={args.model}", "meta.finetune_encoder=true", "meta.dtype=float32",
            "logging.progress_bar=false", "logging.level=warning", *STRATEGIES[strategy.removesuffix("-direct")],
            *extra,
        ]), config)  # fmt: skip
        measured = launch(strategy, config, root / f"out_{strategy}_{len(results)}", args.first_step)
        results.setdefault(strategy, []).append(measured)
        print(f"  {strategy}: {measured['seconds']:.1f} s, peak RSS {measured['peak_rss'] / 2**30:.2f} GiB, "
              f"peak private {measured['peak_anon'] / 2**30:.2f} GiB, of which built "
              f"{measured['built'] / 2**30:.2f} GiB", flush=True)  # fmt: skip
    base = {key: sum(r[key] for r in results["ddp"]) / 2 for key in results["ddp"][0]}
    until = "through the first training step" if args.first_step else "until ready for the first step"
    print(
        f"\n{args.model}, 2 ranks, {'with' if extra else 'without'} a pretrained file, {until}; per rank, ratio to ddp:"
    )
    print("strategy   start-up   peak RSS   peak private   built (private - imports)")
    for strategy in ("ddp", "fsdp", "fsdp-direct", "zero3", "zero3-direct"):
        r = results[strategy][0] if strategy != "ddp" else base
        print(f"{strategy:9s} {r['seconds'] / base['seconds']:8.2f} {r['peak_rss'] / base['peak_rss']:10.2f} "
              f"{r['peak_anon'] / base['peak_anon']:13.2f} {r['built'] / base['built']:12.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
