"""Every option that changes the training step, combined, under every strategy (2 CPU ranks).

Three recipes cover the options, so every option meets every strategy and every other option of its
recipe (a pairwise cover, within what combines at all):

* ``finetune``: EMA, mixup + cutmix, label smoothing, layer decay, drop path, activation
  checkpointing, torch.compile (per block), repeated augmentation, 2 clips per video, gradient
  accumulation, bf16.
* ``probe``: frozen pretrained encoder (held in fp16 where the strategy does not shard), fp16 with
  its loss scaler, EMA of the head, label smoothing, 2 clips x 2 views joined as V-JEPA 2
  evaluates (``concat_tokens``), one encoder pass over both micro-batches of a step
  (``data.encoder_batch_size``).
* ``multilabel``: multi-label data (sigmoid / BCE, mAP gathered over ranks), mixup + cutmix on
  multi-hot targets, label smoothing, class weights from the data, class-balanced sampling, EMA.

Each recipe trains one epoch, resumes for a second, and is compared with the same two epochs run
without interruption (losses equal to the last bit), trains (weights change), keeps the ranks in
agreement, and consolidates to its EMA weights. NaN-step skipping is exercised per strategy by
``test_strategies.py::test_strategy_matches_single_process_and_resumes`` (driver.py ``--nan``).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from harness.config import load_config, save_config
from harness.models import create_encoder
from harness.parallel.deepspeed import fp16_supported
from tests.conftest import tiny_overrides
from tests.deadline import time_left
from tests.parallel.test_strategies import ENV, REPO, STRATEGIES

MATRIX = {"single": ["distributed.strategy=single"], **STRATEGIES}
RECIPES = {
    "finetune": [
        "optimization.ema_decay=0.9",
        "optimization.mixup=0.8",
        "optimization.cutmix=1.0",
        "optimization.label_smoothing=0.1",
        "optimization.layer_decay=0.75",
        "model.drop_path_rate=0.1",
        "model.use_activation_checkpointing=true",
        "model.compile_model=true",
        "data.repeated_aug=2",
        "data.num_clips=2",
        "optimization.accumulation_steps=2",
        "meta.dtype=bfloat16",
    ],
    "probe": [
        "meta.finetune_encoder=false",
        "meta.dtype=float16",
        "optimization.ema_decay=0.9",
        "optimization.label_smoothing=0.1",
        "model.clip_aggregation=concat_tokens",
        "data.num_clips=2",
        "data.val_num_clips=2",
        "data.num_views=2",
        "optimization.accumulation_steps=2",
    ],
    "multilabel": [
        "meta.multi_label=true",
        "optimization.mixup=0.8",
        "optimization.cutmix=1.0",
        "optimization.label_smoothing=0.1",
        "optimization.class_weights=auto",
        "data.class_balanced_sampling=0.5",
        "optimization.ema_decay=0.9",
    ],
}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    torch.manual_seed(5)
    path = tmp_path_factory.mktemp("pretrained") / "encoder.pt"
    torch.save({"encoder": create_encoder("vit_tiny", img_size=32, num_frames=4, depth=2).state_dict()}, path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("strategy", list(MATRIX))
def test_every_step_option_under_every_strategy(strategy, demo_root, multilabel_root, tmp_path, pretrained):
    ranks = 1 if strategy == "single" else 2
    batch = 4 // ranks  # the same global batch of 4 everywhere
    entries = []
    for recipe, options in RECIPES.items():
        common = [*MATRIX[strategy], *options, f"data.batch_size={batch}", f"meta.pretrain_checkpoint={pretrained}",
                  "optimization.ipe=2"]  # fmt: skip
        if recipe == "probe":
            common.append(f"data.encoder_batch_size={2 * batch}")
            if strategy.startswith("zero") and not fp16_supported():  # DeepSpeed refuses fp16 on this CPU
                common.append("meta.dtype=bfloat16")
        configs = {}
        for key, folder, epochs in (("a", recipe, 1), ("b", recipe, 2), ("ref", f"{recipe}_ref", 2)):
            path = tmp_path / f"{recipe}_{key}.yaml"
            root = multilabel_root if recipe == "multilabel" else demo_root
            save_config(load_config(None, tiny_overrides(root, tmp_path / folder, *common,
                                                         f"optimization.epochs={epochs}")), path)  # fmt: skip
            configs[key] = path
        entries += [f"{recipe}:{configs['a']}:{configs['b']}", f"{recipe}_ref:{configs['ref']}:{configs['ref']}"]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks),
               "tests/parallel/config_driver.py", str(tmp_path), *entries]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=time_left())
    assert done.returncode == 0, done.stderr[-6000:]
    for recipe in RECIPES:
        results = [json.loads((tmp_path / f"{recipe}_r{rank}.json").read_text()) for rank in range(ranks)]
        assert results[0]["resumed_at_step"] == 2 and results[0]["steps"] == 4, recipe
        assert results[0]["final"] != results[0]["initial"], f"{recipe}: nothing trained"
        assert all(r["final"] == results[0]["final"] for r in results), f"{recipe}: ranks disagree"
        assert all(r["ema_starts_as_weights"] for r in results), f"{recipe}: EMA shards do not match the weights"
        straight = json.loads((tmp_path / f"{recipe}_ref_r0.json").read_text())["losses"]
        resumed = results[0]["losses"]
        assert [step for step, _ in resumed] == [1, 2, 3, 4]
        assert all(loss == loss for _, loss in resumed), f"{recipe}: non-finite loss"  # NaN != NaN
        assert resumed == straight, f"{recipe}: the resumed run differs from the uninterrupted one"
        assert results[0]["export"] == {"digest": results[0]["ema"], "weights": "ema"}, f"{recipe}: export != EMA"
        assert all(r["ema_applied"] and r["restored_after_ema"] for r in results), f"{recipe}: EMA swap"
        assert ("val_map" in results[0]["last_eval"]) == (recipe == "multilabel"), recipe
        assert results[0]["last_eval"]["val_count"] == (12 if recipe == "multilabel" else 8), "every video once"


VIDEOMAE = [
    "model.model_name=videomae_small",
    "model.options.init_values=0.1",  # VideoMAE's layer scale: parameters FSDP2/ZeRO-3 must shard too
    "optimization.ema_decay=0.9",
    "optimization.layer_decay=0.75",
    "model.drop_path_rate=0.1",
    "model.use_activation_checkpointing=true",
]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["single", "ddp", "fsdp", "zero3"])
def test_the_videomae_family_trains_and_resumes_under_every_strategy(strategy, demo_root, demo_shards, tmp_path):
    """The second model family through the same strategy code: trains on listings, resumes exactly,
    ranks agree, consolidates to its EMA weights; and trains on shards."""
    ranks = 1 if strategy == "single" else 2
    configs = {}
    for key, folder, epochs in (("a", "vm", 1), ("b", "vm", 2), ("ref", "vm_ref", 2)):
        configs[key] = tmp_path / f"{key}.yaml"
        settings = (f"data.batch_size={4 // ranks}", "optimization.ipe=2", f"optimization.epochs={epochs}")
        overrides = tiny_overrides(demo_root, tmp_path / folder, *MATRIX[strategy], *VIDEOMAE, *settings)
        save_config(load_config(None, overrides), configs[key])
    shards = ("data.datasets=[]", "data.val_datasets=[]", f"data.shards=[{demo_shards / 'train/manifest.json'}]",
              f"data.val_shards=[{demo_shards / 'val/manifest.json'}]", "optimization.epochs=1")  # fmt: skip
    configs["shards"] = tmp_path / "shards.yaml"
    overrides = tiny_overrides(demo_root, tmp_path / "vm_shards", *MATRIX[strategy], *VIDEOMAE, *shards,
                               f"data.batch_size={4 // ranks}")  # fmt: skip
    save_config(load_config(None, overrides), configs["shards"])
    entries = [f"vm:{configs['a']}:{configs['b']}", f"vm_ref:{configs['ref']}:{configs['ref']}",
               f"vm_shards:{configs['shards']}:"]  # fmt: skip
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks),
               "tests/parallel/config_driver.py", str(tmp_path), *entries]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=time_left())
    assert done.returncode == 0, done.stderr[-6000:]
    results = [json.loads((tmp_path / f"vm_r{rank}.json").read_text()) for rank in range(ranks)]
    assert results[0]["resumed_at_step"] == 2 and results[0]["steps"] == 4
    assert results[0]["final"] != results[0]["initial"], "nothing trained"
    assert all(r["final"] == results[0]["final"] for r in results), "ranks disagree"
    assert results[0]["losses"] == json.loads((tmp_path / "vm_ref_r0.json").read_text())["losses"]
    assert results[0]["export"] == {"digest": results[0]["ema"], "weights": "ema"}
    streamed = [json.loads((tmp_path / f"vm_shards_r{rank}.json").read_text()) for rank in range(ranks)]
    assert streamed[0]["steps"] > 0 and streamed[0]["final"] != streamed[0]["initial"], "shards: nothing trained"
    assert all(r["final"] == streamed[0]["final"] for r in streamed), "shards: ranks disagree"
