"""FSDP2 and ZeRO-3 build the encoder's blocks on the meta device and materialise only their
shards, and start from exactly the weights a single-process build has for the same seed, with
and without a pretrained file (real 2-rank gloo runs)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from harness.config import load_config, save_config
from harness.models import create_encoder, materialize_stem
from harness.models.family import EncoderSettings, family_of
from tests.conftest import tiny_overrides
from tests.deadline import time_left
from tests.parallel.test_strategies import ENV, REPO, STRATEGIES


@pytest.mark.parametrize("name", ["vit_tiny", "videomae_small", "vjepa2_1_vit_base_384"])
def test_blocks_materialised_one_at_a_time_equal_a_direct_build(name):
    family, settings = family_of(name), EncoderSettings(img_size=32, num_frames=4, depth=4)
    torch.manual_seed(2)
    direct = family.create(name, settings).state_dict()
    torch.manual_seed(2)
    lazy = family.create(name, settings, device="meta")
    deferred = materialize_stem(lazy)
    assert all(p.is_meta for p in lazy.blocks.parameters()) and not lazy.patch_embed.proj.weight.is_meta
    for index, block in enumerate(lazy.blocks):
        block.to_empty(device="cpu")
        deferred.fill(lazy, index, block)
    assert all(torch.equal(lazy.state_dict()[k], v) for k, v in direct.items())


@pytest.mark.slow
def test_sharded_builds_start_from_the_single_process_weights(demo_root, tmp_path):
    torch.manual_seed(7)
    pretrained = tmp_path / "encoder.pt"
    torch.save({"encoder": create_encoder("vit_tiny", img_size=32, num_frames=4, depth=2).state_dict()}, pretrained)
    runs = {"single": ["distributed.strategy=single"], "fsdp": STRATEGIES["fsdp"], "zero3": STRATEGIES["zero3"]}
    digests = {}
    for strategy, options in runs.items():
        entries = []
        for recipe, extra in (("random", ["model.use_activation_checkpointing=true"]),
                              ("pretrained", [f"meta.pretrain_checkpoint={pretrained}"])):  # fmt: skip
            path = tmp_path / f"{strategy}_{recipe}.yaml"
            overrides = tiny_overrides(demo_root, tmp_path / f"{strategy}_{recipe}", *options, *extra,
                                       "optimization.epochs=1", "optimization.ipe=1", "data.batch_size=2")  # fmt: skip
            save_config(load_config(None, overrides), path)
            entries.append(f"{strategy}_{recipe}:{path}:")
        ranks = "1" if strategy == "single" else "2"
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", ranks,
                   "tests/parallel/config_driver.py", str(tmp_path), *entries]  # fmt: skip
        done = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=time_left())
        assert done.returncode == 0, done.stderr[-6000:]
        for recipe in ("random", "pretrained"):
            results = [json.loads((tmp_path / f"{strategy}_{recipe}_r{r}.json").read_text()) for r in range(int(ranks))]
            assert all(r["initial"] == results[0]["initial"] for r in results)
            digests[strategy, recipe] = results[0]["initial"]
    for recipe in ("random", "pretrained"):
        assert digests["fsdp", recipe] == digests["single", recipe], f"fsdp {recipe}: other initial weights"
        assert digests["zero3", recipe] == digests["single", recipe], f"zero3 {recipe}: other initial weights"
    assert digests["single", "random"] != digests["single", "pretrained"]
