"""A V-JEPA 2.1 probe trains on an image listing through the encoder's image path, and on a video
listing through its video path, under DDP and FSDP2 (2 gloo processes, one ``torchrun`` launch for
all four runs; tests/training/test_image_probe.py runs both in one process)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from harness.config import load_config, save_config
from tests.deadline import time_left
from tests.images import probe_overrides, tiny_vjepa21_sizes
from tests.parallel.test_strategies import ENV, REPO, STRATEGIES

LISTINGS = {"images": (1, "patch_embed_img", 4), "videos": (4, "patch_embed", 8)}  # frames, path, val items


@pytest.mark.slow
def test_image_and_video_listings_train_a_vjepa21_probe_under_ddp_and_fsdp(image_root, demo_root, tmp_path,
                                                                           monkeypatch):  # fmt: skip
    monkeypatch.setitem(*tiny_vjepa21_sizes())
    entries = []
    for strategy in ("ddp", "fsdp"):
        for listing, (frames, _, _) in LISTINGS.items():
            root = image_root if listing == "images" else demo_root
            name = f"{strategy}_{listing}"
            overrides = probe_overrides(root, tmp_path / name, frames, *STRATEGIES[strategy], "data.batch_size=2")
            save_config(load_config(None, overrides), tmp_path / f"{name}.yaml")
            entries.append(f"{name}:{tmp_path / f'{name}.yaml'}:")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
               "tests/parallel/image_driver.py", str(tmp_path), *entries]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=time_left())
    assert done.returncode == 0, done.stderr[-6000:]
    for strategy in ("ddp", "fsdp"):
        for listing, (_, path, val_count) in LISTINGS.items():
            name = f"{strategy}_{listing}"
            results = [json.loads((tmp_path / f"{name}_r{rank}.json").read_text()) for rank in range(2)]
            other = ({"patch_embed", "patch_embed_img"} - {path}).pop()
            for result in results:
                assert result["calls"][path] > 0 and result["calls"][other] == 0, (name, result["calls"])
                assert result["probe_changed"], f"{name}: the probe did not train"
            losses = [loss for _, loss in results[0]["losses"]]
            assert len(losses) == 2 and all(loss == loss and abs(loss) != float("inf") for loss in losses), name
            assert results[0]["val_count"] == val_count, f"{name}: every validation item once over both ranks"
