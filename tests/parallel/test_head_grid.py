"""A grid of probe heads under DDP, FSDP2 and DeepSpeed ZeRO-2 (2 processes, ``torchrun``): each
head ends bit-identical to a run that trains it alone with its own settings, as in one process
(tests/training/test_protocol.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from vjepa2.models.attentive_pooler import AttentiveClassifier as TheirClassifier

from harness.models import create_encoder
from tests.deadline import time_left
from tests.models.test_vjepa2_compat import vjepa2_eval_checkpoint
from tests.parallel.test_strategies import ENV, REPO, STRATEGIES, write
from tests.training.test_protocol import GRID, grid_overrides, head_yaml, single_head

# 0.05: every head is clipped at every step (under DeepSpeed by the harness, each head on its own norm).
CLIPPING = {"ddp": "0.05", "fsdp": "0.05", "zero2": "0.05"}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CLIPPING))
def test_each_head_of_a_grid_trains_as_it_would_alone(name, demo_root, tmp_path):
    torch.manual_seed(3)
    encoder = create_encoder("vit_tiny", img_size=32, num_frames=4, depth=2)
    torch.save({"encoder": encoder.state_dict()}, tmp_path / "encoder.pt")
    theirs = [TheirClassifier(embed_dim=192, num_heads=3, depth=1, num_classes=4) for _ in GRID]
    torch.save(vjepa2_eval_checkpoint(theirs), tmp_path / "probes.pt")
    files = (tmp_path / "encoder.pt", tmp_path / "probes.pt")
    base = [*STRATEGIES[name], "data.batch_size=2", f"optimization.clip_grad={CLIPPING[name]}"]
    runs = {"grid": [*base, f"optimization.heads={head_yaml(GRID)}"]}
    runs |= {f"alone{i}": [*base, *single_head(i)] for i in range(len(GRID))}
    args = [f"{run}={write(tmp_path, run, grid_overrides(demo_root, tmp_path / run, files, *extra))}"
            for run, extra in runs.items()]  # fmt: skip
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "tests/parallel/grid_driver.py",
               str(tmp_path), *args]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=time_left())
    assert done.returncode == 0, done.stderr[-4000:]
    grid = torch.load(tmp_path / "grid.pt", weights_only=True)
    for index in range(len(GRID)):
        alone = torch.load(tmp_path / f"alone{index}.pt", weights_only=True)
        assert not torch.equal(alone["linear.weight"], theirs[index].linear.weight), "it trained"
        for key, value in alone.items():
            assert torch.equal(grid[f"heads.{index}.{key}"], value), (index, key)
