"""Hybrid sharding (HSDP) under FSDP2: ``distributed.fsdp.shard_group_size``.

The settings and their checks run in-process; the slow test trains on 4 CPU ranks (gloo) as 2
groups x 2 and must equal plain FSDP over the 4 ranks (same global batch) to fp32 rounding, step
by step, through a resume, with an EMA, in the consolidated export, and from a plain FSDP
checkpoint resumed as HSDP; an HSDP checkpoint resumes on one process (DCP reshards between the
layouts and world sizes).
"""

from __future__ import annotations

import sys

import pytest
import torch

from harness.config import ConfigError, load_config
from harness.core.errors import UserError
from harness.parallel.fsdp import FSDPStrategy, hybrid_mesh_shape
from harness.parallel.precision import Precision
from harness.parallel.registry import STRATEGY_SPECS
from tests.conftest import tiny_overrides
from tests.parallel.test_strategies import STRATEGIES, launch, losses, write

HSDP = [*STRATEGIES["fsdp"], "distributed.fsdp.shard_group_size=2"]
KEY = "distributed.fsdp.shard_group_size"


@pytest.mark.parametrize("size, world, local, shape", [
    (None, 4, 4, None),  # the default: plain FSDP over all ranks
    (2, 4, None, (2, 2)),
    ("auto", 8, 4, (2, 4)),  # auto: the launcher's processes per node
    (0, 8, 4, (2, 4)),
    ("auto", 4, 4, None),  # one node: plain FSDP
    (4, 4, 1, None),
    (1, 4, 4, (4, 1)),  # every rank a whole copy (DDP-like)
])  # fmt: skip
def test_hybrid_mesh_shape(size, world, local, shape):
    assert hybrid_mesh_shape(size, world, local) == shape


def test_a_world_that_does_not_split_into_groups_is_a_one_line_error():
    cpu = torch.device("cpu")
    with pytest.raises(UserError, match=rf"^{KEY}=3: 4 ranks do not split into groups of 3; use a divisor"):
        FSDPStrategy(cpu, Precision("float32", cpu), 0, 4, shard_group_size=3)
    with pytest.raises(UserError, match=rf"^{KEY}=auto: 6 ranks do not split into groups of 4"):
        FSDPStrategy(cpu, Precision("float32", cpu), 0, 6, shard_group_size="auto", local_world_size=4)
    with pytest.raises(UserError, match=rf"^{KEY}=auto: the launcher did not say .*LOCAL_WORLD_SIZE"):
        hybrid_mesh_shape("auto", 4, None)


def test_the_key_is_checked_when_the_config_loads():
    config = load_config(None, [])
    assert config.distributed.fsdp.shard_group_size is None, "absent: plain FSDP, as before"
    for value, read in (("2", 2), ("0", 0), ("auto", "auto")):
        config = load_config(None, [f"{KEY}={value}"])
        assert STRATEGY_SPECS["fsdp"].options(config.distributed, None, None)["shard_group_size"] == read
    for value in ("-1", "node", "true"):
        with pytest.raises(ConfigError, match=rf"^{KEY}"):
            load_config(None, [f"{KEY}={value}"])


def compare(left: dict, right: dict, what: str) -> None:
    assert set(left) == set(right), what
    for key, value in left.items():
        torch.testing.assert_close(value.float(), right[key].float(), rtol=0, atol=1e-6, msg=f"{what}: {key}")


@pytest.mark.slow
def test_hsdp_equals_fsdp_through_a_resume_with_ema_and_export(demo_root, tmp_path):
    # 4 ranks x batch 1 = the global batch of test_strategies' runs; clipping on (the norm of a
    # 2-D mesh must count each shard once, not once per replica); an EMA of the weights
    common = ("data.batch_size=1", "optimization.clip_grad=0.5", "optimization.ema_decay=0.9")

    def config(name: str, strategy: list[str], epochs: int, run: str) -> str:
        overrides = tiny_overrides(demo_root, tmp_path / run, *strategy, *common, f"optimization.epochs={epochs}")
        return str(write(tmp_path, name, overrides))

    entries = [
        f"fsdp:{config('fsdp', STRATEGIES['fsdp'], 2, 'fsdp')}:",  # uninterrupted, 2 epochs
        f"hsdp:{config('hsdp_a', HSDP, 1, 'hsdp')}:{config('hsdp_b', HSDP, 2, 'hsdp')}",  # 1 epoch, then resumed
        # a plain FSDP checkpoint resumed as HSDP (DCP and the EMA's pieces reshard)
        f"switch:{config('switch_a', STRATEGIES['fsdp'], 1, 'switch')}:{config('switch_b', HSDP, 2, 'switch')}",
    ]
    launch([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "4", "tests/parallel/hsdp_driver.py",
            str(tmp_path), *entries], tmp_path)  # fmt: skip
    fsdp = torch.load(tmp_path / "fsdp.pt", weights_only=True)
    assert fsdp["description"] == "fsdp"
    assert all(max(log["grad_norm"]) > 0.5 for log in fsdp["logs"]), "clipping was active"
    for name in ("hsdp", "switch"):
        hybrid = torch.load(tmp_path / f"{name}.pt", weights_only=True)
        assert hybrid["description"].startswith("fsdp hybrid (2 groups of 2 ranks")
        assert hybrid["parameters"] == fsdp["parameters"], "whole parameters counted once"
        assert hybrid["ema_applied"] and hybrid["restored_after_ema"], "evaluation's swap of the EMA"
        for rank, (ours, theirs) in enumerate(zip(hybrid["logs"], fsdp["logs"], strict=True)):
            assert len(ours["loss"]) == 12, "2 epochs of 6 steps"
            torch.testing.assert_close(torch.tensor(ours["loss"]), torch.tensor(theirs["loss"]), rtol=0, atol=1e-6,
                                       msg=f"{name}: rank {rank}'s losses")  # fmt: skip
            # norms of 2-8 differ by fp32 rounding (2 ulp); counted once per replica they would be sqrt(2) x
            torch.testing.assert_close(torch.tensor(ours["grad_norm"]), torch.tensor(theirs["grad_norm"]), rtol=1e-6,
                                       atol=0, msg=f"{name}: rank {rank}'s gradient norms")  # fmt: skip
        compare(hybrid["final"], fsdp["final"], f"{name}: final weights")
        compare(hybrid["ema"], fsdp["ema"], f"{name}: EMA")
        compare(hybrid["export"], fsdp["export"], f"{name}: consolidated export")
        compare({"logits": hybrid["ema_logits"]}, {"logits": fsdp["ema_logits"]}, f"{name}: a forward with the EMA in")
    assert any(not torch.equal(v, fsdp["final"][k].float()) for k, v in fsdp["ema"].items()), "the EMA is no copy"

    # HSDP's epoch-1 checkpoint resumed by one process (batch 4): DCP and the EMA reshard 4 -> 1,
    # and the second epoch's losses are the 4 ranks' mean losses of the plain FSDP run
    folder = tmp_path / "hsdp_after_a"
    one = write(tmp_path, "one", tiny_overrides(demo_root, folder, *STRATEGIES["fsdp"], *common, "data.batch_size=4",
                                                "optimization.epochs=2"))  # fmt: skip
    done = launch([sys.executable, "harness/train.py", "--config", str(one)], tmp_path)
    assert "resumed from" in done.stderr
    mean = [sum(column) / 4 for column in zip(*(log["loss"] for log in fsdp["logs"]))]
    assert losses(folder)[6:] == pytest.approx(mean[6:], rel=1e-5, abs=1e-6)
