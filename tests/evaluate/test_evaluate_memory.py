"""Evaluation builds the model the way training does (:func:`harness.training.assemble.prepare_model`):
under FSDP2 and ZeRO-3 each rank materialises only its shards, so the memory evaluation adds per
rank follows the sharding instead of holding the whole fp32 model (it did before issue 29).

Measured on real 2-rank gloo groups running ``harness.evaluate``'s work on a ViT-L encoder (303M
parameters, 1.2 GB in fp32) with tiny clips, so the weights dominate: the peak resident memory
(Linux's VmHWM, reset when evaluation begins) minus the memory at that moment.

glibc's malloc raises its mmap threshold as large blocks are freed, after which freed 10-50 MB
tensors (each full block made once, FSDP2's gathered blocks) stay in the heap and count as
resident: measured here, the FSDP2 rank's peak was 1.4x the model that way although its live
parameters were half of it. The runs below fix the threshold at 1 MiB (``MALLOC_MMAP_THRESHOLD_``),
so the peak shows what is alive at once, which is what a GPU's allocator would hold."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from harness.config import load_config, save_config
from harness.training.model_parts import build_model
from tests.conftest import tiny_overrides
from tests.deadline import time_left
from tests.parallel.test_strategies import ENV, REPO, STRATEGIES

LARGE = ["model.model_name=vit_large", "model.depth=24", "meta.finetune_encoder=false", "data.batch_size=2"]


def probe_file(config, path) -> int:
    """A V-JEPA 2 probe file (``classifiers``: ``module.``-prefixed head states) for ``config``'s
    head; returns the size in bytes of the whole model's fp32 parameters."""
    model = build_model(config, 4, device="meta")  # the encoder costs nothing here
    head = {f"module.{k}": v for k, v in model.classifier.state_dict().items()}
    torch.save({"classifiers": [head], "epoch": 1}, path)
    return sum(p.numel() for p in model.parameters()) * 4


def grown(tmp_path, name: str, options: list[str], ranks: int, demo_root) -> tuple[list[int], int]:
    folder = tmp_path / name
    folder.mkdir()
    config = load_config(None, tiny_overrides(demo_root, folder, *options, *LARGE))
    path = folder / "config.yaml"
    save_config(config, path)
    model_bytes = probe_file(config, folder / "probe.pt")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks),
               "tests/evaluate/memory_driver.py", str(path), str(folder / "probe.pt"), str(folder)]  # fmt: skip
    env = {**ENV, "MALLOC_MMAP_THRESHOLD_": str(2**20)}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=time_left())
    assert done.returncode == 0, done.stderr[-4000:]
    records = [json.loads((folder / f"memory_r{rank}.json").read_text()) for rank in range(ranks)]
    assert all(record["code"] == 0 for record in records)
    return [record["grown_bytes"] for record in records], model_bytes


@pytest.mark.slow
def test_evaluation_memory_per_rank_follows_the_sharding(demo_root, tmp_path):
    (single,), model_bytes = grown(tmp_path, "single", ["distributed.strategy=single"], 1, demo_root)
    # the measure sees the model: one process holds all of it
    assert single > 0.9 * model_bytes, f"single process grew {single / 2**20:.0f} MiB, model {model_bytes / 2**20:.0f}"
    # ZeRO-3 keeps up to stage3_max_live_parameters gathered and prefetches buckets once it has
    # traced a step: DeepSpeed's 1e9 default and the shipped 5e8 bucket hold this whole model
    # gathered in the forward (0.96x measured), which says nothing about the build; bounded here
    ds_config = json.loads((REPO / "ds_configs/zero3.json").read_text())
    ds_config["zero_optimization"] |= {"stage3_prefetch_bucket_size": 10**7, "stage3_max_live_parameters": 2 * 10**7}
    (tmp_path / "zero3.json").write_text(json.dumps(ds_config))
    zero3 = ["distributed.strategy=deepspeed", f"distributed.deepspeed.config={tmp_path / 'zero3.json'}"]
    runs = {"fsdp": STRATEGIES["fsdp"], "zero3": zero3}
    for name, options in runs.items():
        per_rank, _ = grown(tmp_path, name, options, 2, demo_root)
        for rank, value in enumerate(per_rank):
            # its half of the model, one block made in full at a time, and the blocks gathered for
            # the forward (0.69 measured); the whole model on every rank (the build before issue
            # 29) is 1.0 and more
            assert value < 0.85 * model_bytes, (
                f"{name} rank {rank} grew {value / 2**20:.0f} MiB for a {model_bytes / 2**20:.0f} MiB model"
            )
