"""Hybrid sharding (HSDP) under FSDP2: ``distributed.fsdp.shard_group_size``.

The settings and their checks run in-process; the slow tests train on 4 CPU ranks (gloo) as 2
groups x 2 (tests/parallel/hsdp_driver.py). HSDP must equal plain FSDP over the 4 ranks (same
global batch) to fp32 rounding, step by step, through a resume, with an EMA, in the consolidated
export, from a plain FSDP checkpoint resumed as HSDP and from an HSDP checkpoint resumed as plain
FSDP; an HSDP checkpoint resumes on one process (DCP reshards between the layouts and world
sizes). With host-memory offload HSDP equals plain FSDP with offload; in bf16 it trains, its two
replicas hold bit-identical shards, and a resume continues bit for bit.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.distributed.fsdp import FSDPModule

from harness.config import ConfigError, load_config
from harness.core.errors import UserError
from harness.parallel.fsdp import FSDPStrategy, hybrid_mesh_shape
from harness.parallel.precision import Precision
from harness.parallel.registry import STRATEGY_SPECS
from harness.training import Trainer
from tests.conftest import tiny_overrides
from tests.parallel.test_strategies import ENV, REPO, STRATEGIES, launch, losses, write

HSDP = [*STRATEGIES["fsdp"], "distributed.fsdp.shard_group_size=2"]
OFFLOAD = "distributed.fsdp.cpu_offload=true"
HYBRID = "fsdp hybrid (2 groups of 2 ranks: sharded in a group, replicated across)"  #: HSDP's description
# 4 ranks x batch 1 = the global batch of test_strategies' runs; clipping on (the norm of a 2-D mesh
# must count each shard once, not once per replica); an EMA of the weights
COMMON = ("data.batch_size=1", "optimization.clip_grad=0.5", "optimization.ema_decay=0.9")
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


def compare(left: dict, right: dict, what: str, atol: float = 1e-6) -> None:
    assert set(left) == set(right), what
    for key, value in left.items():
        torch.testing.assert_close(value.float(), right[key].float(), rtol=0, atol=atol,
                                   msg=lambda found, key=key: f"{what}: {key}: {found}")  # fmt: skip


def run_config(tmp_path: Path, demo_root: Path, name: str, run: str, epochs: int, *settings: str) -> str:
    """A config file ``<name>.yaml`` training ``epochs`` epochs (in total) in folder ``run``."""
    overrides = tiny_overrides(demo_root, tmp_path / run, *COMMON, *settings, f"optimization.epochs={epochs}")
    return str(write(tmp_path, name, overrides))


def drive(tmp_path: Path, *entries: str, nan_step: int | None = None) -> dict[str, dict]:
    """hsdp_driver.py on 4 ranks; its result of each entry by name (``nan_step``: rank 1's loss is
    NaN on the last micro-batch of that step)."""
    env = {**ENV, **({"HSDP_DRIVER_NAN_STEP": str(nan_step)} if nan_step is not None else {})}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "4",
                           "tests/parallel/hsdp_driver.py", str(tmp_path), *entries], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    return {entry.split(":")[0]: torch.load(tmp_path / f"{entry.split(':')[0]}.pt", weights_only=True)
            for entry in entries}  # fmt: skip


def assert_trains_as(ours: dict, theirs: dict, what: str, steps: int = 12, weights_atol: float = 1e-5) -> None:
    """Every rank's losses and gradient norms (``steps`` logged), the final weights, the EMA and
    the export (within ``weights_atol``) of two runs of the same global batch agree to fp32 rounding.

    Weights get 1e-5 (1% of one step at lr 1e-3), not 1e-6: AdamW divides each gradient by its own
    running RMS, so an element whose gradient is near zero turns a rounding difference in the
    reduction order (HSDP reduces in two stages) into a visible step. Seen on an AVX-512 Xeon: one
    element in 295k 2e-6 apart after 12 steps; on an AMD EPYC without AVX-512, none above 1e-6."""
    assert ours["parameters"] == theirs["parameters"], f"{what}: whole parameters counted once"
    for rank, (mine, other) in enumerate(zip(ours["logs"], theirs["logs"], strict=True)):
        assert len(mine["loss"]) == steps, f"{what}: rank {rank}'s steps logged"
        torch.testing.assert_close(torch.tensor(mine["loss"]), torch.tensor(other["loss"]), rtol=0, atol=1e-6,
                                   equal_nan=True, msg=f"{what}: rank {rank}'s losses")  # fmt: skip
        # norms of 2-8 differ by fp32 rounding (2 ulp); counted once per replica they would be sqrt(2) x
        torch.testing.assert_close(torch.tensor(mine["grad_norm"]), torch.tensor(other["grad_norm"]), rtol=1e-6,
                                   atol=0, equal_nan=True, msg=f"{what}: rank {rank}'s gradient norms")  # fmt: skip
    compare(ours["final"], theirs["final"], f"{what}: final weights", weights_atol)
    compare(ours["ema"], theirs["ema"], f"{what}: EMA", weights_atol)
    compare(ours["export"], theirs["export"], f"{what}: consolidated export", weights_atol)
    if ours["ema"] is not None:  # evaluation's swap puts the average in and takes it out again
        assert ours["ema_applied"] and ours["restored_after_ema"], f"{what}: evaluation's swap of the EMA"
        compare({"logits": ours["ema_logits"]}, {"logits": theirs["ema_logits"]}, f"{what}: a forward with the EMA in",
                weights_atol)  # fmt: skip


def assert_replicas_agree(result: dict, what: str) -> None:
    """Ranks r and r + 2 (the same shard in the two groups) hold bit-identical pieces: parameters,
    Adam's moments, EMA; ranks r and r + 1 (two shards of one group) do not."""
    pieces = result["pieces"]
    assert set(pieces[0]) == set(pieces[2]) and any(key.startswith("exp_avg_sq ") for key in pieces[0]), what
    for rank in (0, 1):
        for key, value in pieces[rank].items():
            assert torch.equal(value, pieces[rank + 2][key]), f"{what}: ranks {rank} and {rank + 2} differ in {key}"
    assert any(not torch.equal(v, pieces[1][k]) for k, v in pieces[0].items() if v.shape == pieces[1][k].shape), what


@pytest.mark.slow
def test_hsdp_equals_fsdp_through_a_resume_with_ema_and_export(demo_root, tmp_path):
    def config(name: str, strategy: list[str], epochs: int, run: str) -> str:
        return run_config(tmp_path, demo_root, name, run, epochs, *strategy)

    results = drive(
        tmp_path,
        f"fsdp:{config('fsdp', STRATEGIES['fsdp'], 2, 'fsdp')}:",  # uninterrupted, 2 epochs
        f"hsdp:{config('hsdp_a', HSDP, 1, 'hsdp')}:{config('hsdp_b', HSDP, 2, 'hsdp')}",  # 1 epoch, then resumed
        # a plain FSDP checkpoint resumed as HSDP (DCP and the EMA's pieces reshard)
        f"switch:{config('switch_a', STRATEGIES['fsdp'], 1, 'switch')}:{config('switch_b', HSDP, 2, 'switch')}",
        # and back: HSDP's epoch-1 checkpoint (hsdp's, copied) resumed as plain FSDP on the same 4 ranks
        f"back:@hsdp:{config('back_b', STRATEGIES['fsdp'], 2, 'back')}",
    )  # fmt: skip
    fsdp = results["fsdp"]
    assert fsdp["description"] == "fsdp"
    assert all(max(log["grad_norm"]) > 0.5 for log in fsdp["logs"]), "clipping was active"
    for name in ("hsdp", "switch", "back"):
        assert results[name]["description"] == ("fsdp" if name == "back" else HYBRID), name
        assert_trains_as(results[name], fsdp, name)
    assert_replicas_agree(results["hsdp"], "hsdp")
    assert not any(result["offloaded"] for result in results.values())
    assert any(not torch.equal(v, fsdp["final"][k].float()) for k, v in fsdp["ema"].items()), "the EMA is no copy"

    # HSDP's epoch-1 checkpoint resumed by one process (batch 4): DCP and the EMA reshard 4 -> 1,
    # and the second epoch's losses are the 4 ranks' mean losses of the plain FSDP run
    folder = tmp_path / "hsdp_after_a"
    one = write(tmp_path, "one", tiny_overrides(demo_root, folder, *STRATEGIES["fsdp"], *COMMON, "data.batch_size=4",
                                                "optimization.epochs=2"))  # fmt: skip
    done = launch([sys.executable, "harness/train.py", "--config", str(one)], tmp_path)
    assert "resumed from" in done.stderr
    mean = [sum(column) / 4 for column in zip(*(log["loss"] for log in fsdp["logs"]))]
    assert losses(folder)[6:] == pytest.approx(mean[6:], rel=1e-5, abs=1e-6)


@pytest.mark.slow
def test_hsdp_with_cpu_offload_equals_fsdp_with_offload(demo_root, tmp_path):
    results = drive(
        tmp_path,
        f"fsdp:{run_config(tmp_path, demo_root, 'fsdp', 'fsdp', 2, *STRATEGIES['fsdp'], OFFLOAD)}:",
        f"hsdp:{run_config(tmp_path, demo_root, 'hsdp_a', 'hsdp', 1, *HSDP, OFFLOAD)}:"
        f"{run_config(tmp_path, demo_root, 'hsdp_b', 'hsdp', 2, *HSDP, OFFLOAD)}",  # resumed after epoch 1
    )  # fmt: skip
    assert results["hsdp"]["description"] == HYBRID
    assert_trains_as(results["hsdp"], results["fsdp"], "hsdp with offload")
    assert_replicas_agree(results["hsdp"], "hsdp with offload")
    assert results["hsdp"]["offloaded"] and results["fsdp"]["offloaded"], "FSDP2 kept the shards in host memory"


@pytest.mark.slow
def test_hsdp_all_reduces_between_groups_once_per_accumulated_step_and_equals_fsdp(demo_root, tmp_path):
    # 2 micro-batches of 1 per rank (global batch 8: 3 steps); step 1's last micro-batch has a NaN
    # loss on rank 1, so every rank skips step 1 after the first micro-batch's gradients were
    # reduced inside the groups: they must not reach step 2.
    accumulate = ("optimization.accumulation_steps=2",)
    results = drive(
        tmp_path,
        f"fsdp:{run_config(tmp_path, demo_root, 'fsdp', 'fsdp', 1, *STRATEGIES['fsdp'], *accumulate)}:",
        f"hsdp:{run_config(tmp_path, demo_root, 'hsdp', 'hsdp', 1, *HSDP, *accumulate)}:",
        nan_step=1,
    )  # fmt: skip
    fsdp, hsdp = results["fsdp"], results["hsdp"]
    for result in (fsdp, hsdp):
        assert (result["steps"], result["skipped_steps"]) == (3, 1), "step 1 skipped on every rank"
    assert fsdp["group_all_reduces"] == 0, "plain FSDP has no groups to all-reduce between"
    # one all-reduce per FSDP unit for each step that ran its last backward (steps 0 and 2), not
    # one per micro-batch (5 backwards; what a torch without reset_iter_state still does)
    backwards = 2 if hasattr(FSDPModule, "reset_iter_state") else 5
    assert hsdp["group_all_reduces"] == hsdp["units"] * backwards, f"{hsdp['group_all_reduces']} for {hsdp['units']}"
    # Step 2's gradient norm and the weights tell a leak: step 1's first micro-batch joining step 2
    # moves that norm by 30% and weights by 6e-3. Summed in another order, the 2 micro-batches'
    # gradients differ by rounding, which Adam scales up in entries whose gradient is near 0:
    # weights differ by up to 6e-6 after these 3 steps, norms by 5e-7.
    assert_trains_as(hsdp, fsdp, "hsdp with accumulation and a skipped step", steps=3, weights_atol=2e-5)


@pytest.mark.slow
def test_hsdp_in_bf16_trains_its_replicas_agree_and_a_resume_is_bit_exact(demo_root, tmp_path):
    bf16 = (*HSDP, "meta.dtype=bfloat16")
    results = drive(
        tmp_path,
        f"whole:{run_config(tmp_path, demo_root, 'whole', 'whole', 2, *bf16)}:",  # uninterrupted
        f"resumed:{run_config(tmp_path, demo_root, 'resumed_a', 'resumed', 1, *bf16)}:"
        f"{run_config(tmp_path, demo_root, 'resumed_b', 'resumed', 2, *bf16)}",
    )  # fmt: skip
    whole, resumed = results["whole"], results["resumed"]
    assert whole["description"] == HYBRID
    assert resumed["logs"] == whole["logs"], "every rank's losses and gradient norms, bit for bit"
    for part in ("final", "ema", "export"):
        compare(resumed[part], whole[part], f"resumed {part}", atol=0)
    for name, result in results.items():
        assert_replicas_agree(result, name)
    # It trains, in bf16: the 4 ranks' mean losses of the first epoch near those of one fp32
    # process on the same global batch, yet not them (bf16's 8-bit mantissa moves a loss by far
    # more than 1e-4)
    fp32 = tiny_overrides(demo_root, tmp_path / "fp32", *COMMON, "data.batch_size=4", "optimization.epochs=1")
    Trainer(load_config(None, fp32)).fit()
    mean = [sum(column) / 4 for column in zip(*(log["loss"][:6] for log in whole["logs"]))]
    assert mean == pytest.approx(losses(tmp_path / "fp32"), rel=0.05)
    assert max(abs(a - b) for a, b in zip(mean, losses(tmp_path / "fp32"))) > 1e-4
