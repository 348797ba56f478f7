import os
import random

import numpy as np
import pytest
import torch

from harness.models.checkpoint_io import CheckpointError
from harness.training.state.checkpoint import CheckpointManager, capture_rng, resolve_checkpoint, restore_rng


def write_value(value):
    def write(folder):
        torch.save({"value": value}, folder / "state.pt")

    return write


def test_save_points_and_prunes(tmp_path):
    manager = CheckpointManager(tmp_path)
    manager.save("e0000_s00000001", write_value(1), ["latest", "best"])
    manager.save("e0000_s00000002", write_value(2), ["latest"])
    manager.save("e0001_s00000003", write_value(3), ["latest", "epoch_0001"])
    expected = {"latest": "e0001_s00000003", "best": "e0000_s00000001", "epoch_0001": "e0001_s00000003"}
    assert manager.pointers() == expected
    folders = sorted(p.name for p in manager.root.iterdir() if p.is_dir())
    assert folders == ["e0000_s00000001", "e0001_s00000003"], "unreferenced checkpoints are deleted"
    assert torch.load(manager.find("best") / "state.pt")["value"] == 1
    assert resolve_checkpoint(tmp_path) == manager.root / "e0000_s00000001", "a run folder resolves to best"
    assert resolve_checkpoint(manager.root / "latest") == manager.root / "e0001_s00000003"


def test_crash_mid_write_keeps_the_previous_checkpoint(tmp_path):
    manager = CheckpointManager(tmp_path)
    manager.save("e0000_s00000001", write_value(1), ["latest"])

    def crash(folder):
        (folder / "state.pt").write_bytes(b"half a file")
        raise KeyboardInterrupt("killed while writing")

    with pytest.raises(KeyboardInterrupt):
        manager.save("e0000_s00000002", crash, ["latest"])
    assert manager.find("latest").name == "e0000_s00000001"
    assert torch.load(manager.find("latest") / "state.pt")["value"] == 1
    manager.save("e0000_s00000003", write_value(3), ["latest"])
    leftovers = [p.name for p in manager.root.iterdir() if p.name.startswith(".")]
    assert leftovers == [], "the next save clears the half-written folder"


def test_pointer_to_missing_folder_is_a_clear_error(tmp_path):
    manager = CheckpointManager(tmp_path)
    (manager.root / "latest").write_text("e0009_s00000099\n")
    with pytest.raises(CheckpointError, match="e0009_s00000099"):
        manager.find("latest")


def test_rng_round_trip(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    state = capture_rng()
    expected = (random.random(), np.random.rand(), torch.rand(3))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    manager = CheckpointManager(tmp_path)
    restore_rng(state)
    manager.save("c", lambda folder: None, ["latest"])  # saves the restored state again
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    assert manager.restore_rank_state(manager.find("latest")) == {}
    assert (random.random(), np.random.rand()) == expected[:2]
    assert torch.equal(torch.rand(3), expected[2])
    assert not os.path.exists(manager.root / "c" / "rank_r1.pt")
