"""Every shipped config (``configs/*.yaml``), reduced in size by overrides only, under the strategy
its header recommends (``torchrun``: ddp), under FSDP2 and under ZeRO-3, on 2 CPU ranks: it trains
two steps (the weights change, the loss is finite), evaluates with its EMA weights where it keeps an
average, saves, holds the same weights on both ranks and counts its parameters correctly. Exact
resume and consolidation of the same options under every strategy are test_feature_matrix.py's.

The configs of one family and kind differ only in width (model name, batch size, drop path,
paths). So the widest config that trains its encoder (the ViT-g fine-tune) runs at its own width
under DDP, the launch the headers recommend (two blocks of 1408 channels, their gradients and AdamW
states); every other run uses the family's smallest registered width: the same recipe through the
same code at a fraction of the CI time (every config's full width builds and plans in
tests/test_plan_suggest.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.config import load_config, save_config
from harness.data.synthetic import LABEL_SETS
from tests.deadline import time_left
from tests.parallel.test_strategies import ENV, REPO, STRATEGIES

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


#: the smallest registered width of each family (sharded runs; see the module's docstring)
NARROWEST = {"vit": "vit_tiny", "vjepa2.1": "vjepa2_1_vit_base_384", "videomae": "videomae_small"}


def narrowed(config: Path, strategy: str) -> bool:
    """Whether ``config`` runs at its family's smallest width under ``strategy`` (module docstring)."""
    return not (strategy == "ddp" and config.stem == "vitg16_finetune")


def reduced(
    config: Path, root: Path, folder: Path, strategy: list[str], epochs: int, narrow: bool = False
) -> list[str]:
    """Overrides that shrink a shipped config to seconds on CPU (sizes and paths only): 2 encoder
    blocks (4 for V-JEPA 2.1, whose four levels need them), at most 2 probe blocks (so the probe's
    self-attention path stays), 32 px, 4 frames; ``narrow``: the family's smallest width too."""
    from harness.models import family_of

    sections = yaml.safe_load(config.read_text())
    model = sections.get("model", {})
    pooler_depth = min(2, model.get("attn_pooler_depth", 1))
    family = family_of(model.get("model_name", "vit_large")).name
    sizes = [f"model.depth={4 if family == 'vjepa2.1' else 2}"]
    if narrow:
        sizes.append(f"model.model_name={NARROWEST[family]}")
    return [
        *sizes,
        f"model.attn_pooler_depth={pooler_depth}",
        f"folder={folder}",
        f"data.datasets=[{root / 'train.csv'}]",
        f"data.val_datasets=[{root / 'val.csv'}]",
        *labels_of(sections, root),
        "data.generate_demo_data=false",
        "data.dataset_fpcs=[4]",
        "data.val_dataset_fpcs=[4]",
        "data.crop_size=32",
        "data.batch_size=2",
        "data.val_batch_size=4",
        "data.val_num_clips=1",
        "data.num_views=1",
        "data.num_workers=0",
        "meta.pretrain_checkpoint=null",
        "optimization.ipe=2",
        f"optimization.epochs={epochs}",
        "optimization.warmup=0.5",
        "optimization.anneal=0.5",
        "checkpointing.every_steps=0",
        "checkpointing.save_best=false",
        "logging.progress_bar=false",
        # compiled blocks under every strategy are test_feature_matrix.py's; here they would add
        # each config's compile time to CI under each strategy
        "model.compile_model=false",
        *strategy,
    ]


def labels_of(sections: dict, root: Path) -> list[str]:
    """The class overrides: the demo's 4 classes, or, for a config of label sets, the label-set
    demo's sets and a names file per set (``root`` then holds :func:`make_label_set_demo`'s data)."""
    if not sections.get("meta", {}).get("label_sets"):
        return [f"data.class_names={root / 'classes.txt'}", "meta.num_classes=4"]
    names = ", ".join(f"{name}: {root / f'classes_{name}.txt'}" for name in LABEL_SETS)
    return [f"data.class_names={{{names}}}"]


def classes_of(config: Path) -> int:
    """The reduced model's outputs: 4 classes, or every label set's."""
    label_sets = yaml.safe_load(config.read_text()).get("meta", {}).get("label_sets")
    return sum(len(classes) for classes in LABEL_SETS.values()) if label_sets else 4


def write(path: Path, overrides: list[str], source: Path) -> Path:
    save_config(load_config(source, overrides), path)
    return path


def expected_parameters(config: Path, narrow: bool) -> tuple[int, int]:
    """Total and trained parameters of the reduced model, counted on one unsharded copy."""
    from harness.training.assemble import build_model

    reduced_config = load_config(config, reduced(config, Path("/x"), Path("/x"), [], 1, narrow))
    model = build_model(reduced_config, classes_of(config))
    return sum(p.numel() for p in model.parameters()), sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp", "zero3"])
def test_every_shipped_config_trains_under_the_strategy(strategy, demo_root, label_set_root, tmp_path):
    entries = []
    for config in CONFIGS:
        name = config.stem
        narrow = narrowed(config, strategy)
        folder = tmp_path / name
        options = STRATEGIES[strategy]
        root = label_set_root if classes_of(config) != 4 else demo_root
        config_a = write(tmp_path / f"{name}_a.yaml", reduced(config, root, folder, options, 1, narrow), config)
        entries.append(f"{name}:{config_a}:")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
               "tests/parallel/config_driver.py", str(tmp_path), *entries]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=time_left())
    assert done.returncode == 0, done.stderr[-6000:]
    for config in CONFIGS:
        name = config.stem
        ranks = [json.loads((tmp_path / f"{name}_r{rank}.json").read_text()) for rank in range(2)]
        assert ranks[0]["steps"] == 2, name
        assert ranks[0]["final"] != ranks[0]["initial"], f"{name}: the weights did not change"
        assert ranks[0]["final"] == ranks[1]["final"], f"{name}: ranks disagree"
        assert all(loss == loss for _, loss in ranks[0]["losses"]), f"{name}: non-finite loss"  # NaN != NaN
        total, trained = expected_parameters(config, narrowed(config, strategy))
        assert ranks[0]["parameters"] == [total, trained], f"{name}: parameter count under {strategy}"
        if yaml.safe_load(config.read_text()).get("optimization", {}).get("ema_decay"):
            assert ranks[0]["ema_starts_as_weights"] and ranks[1]["ema_starts_as_weights"], name
            assert ranks[0]["ema"] == ranks[1]["ema"], f"{name}: ranks disagree on the EMA"
            assert all(r["ema_applied"] and r["restored_after_ema"] for r in ranks), f"{name}: EMA swap"


def test_reduction_keeps_the_shipped_choices():
    """The overrides change sizes and paths only (and leave blocks uncompiled, a CI-time choice):
    every other key keeps the shipped value."""
    config = REPO / "configs" / "vitl16_finetune.yaml"
    shipped, small = load_config(config), load_config(config, reduced(config, Path("/d"), Path("/f"), [], 1))
    for section in ("model", "optimization", "data_aug"):
        for key, value in vars(getattr(shipped, section)).items():
            if key not in ("depth", "epochs", "warmup", "anneal", "ipe", "compile_model"):
                assert getattr(getattr(small, section), key) == value, f"{section}.{key}"
    assert small.model.model_name == shipped.model.model_name
