"""DeepSpeed ZeRO++ under ``distributed.strategy=deepspeed`` (ds_configs/zero3_hpz.json,
ds_configs/zero3_zeropp.json).

The JSON checks run in-process: hpZ's ``"auto"`` is the launcher's processes per node, an explicit
group size must divide the world, qwZ/qgZ are refused on a CPU (DeepSpeed's quantizer kernels are
CUDA only), MiCS is refused (DeepSpeed removed it). The slow test trains ZeRO-3 + hpZ on 4
CPU ranks started as 2 emulated nodes x 2 (two torchrun agents at one rendezvous, so
LOCAL_WORLD_SIZE is 2 and ``"auto"`` makes groups of a node), through a resume, against an
uninterrupted hpZ run and a plain ZeRO-3 run on the same 4 ranks.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import torch

from harness.parallel.deepspeed import DeepSpeedConfigError, DeepSpeedStrategy
from harness.parallel.precision import Precision
from harness.parallel.zeropp import hpz_partition_size, quantizer_available
from tests.conftest import tiny_overrides
from tests.deadline import time_left
from tests.parallel.test_hsdp import compare
from tests.parallel.test_launchers import free_port, run_nodes
from tests.parallel.test_setup import resolve
from tests.parallel.test_strategies import REPO, write

HPZ_JSON, ZEROPP_JSON = REPO / "ds_configs/zero3_hpz.json", REPO / "ds_configs/zero3_zeropp.json"
KEY = "zero_optimization.zero_hpz_partition_size"
CPU = torch.device("cpu")


@pytest.mark.parametrize("given, world, local, size", [
    ("auto", 8, 4, 4),  # auto: the launcher's processes per node
    ("auto", 32, 8, 8),
    (2, 4, None, 2),  # a number needs no launcher's word
    ("auto", 4, 4, 1),  # one node: a second partition over all ranks is ZeRO-3's own, so hpZ is off
    (4, 4, 1, 1),
    ("auto", 4, 1, 1),  # one process per node: nothing to keep inside a node
    (0, 4, 2, 1),  # DeepSpeed's "off"
])  # fmt: skip
def test_hpz_partition_size(given, world, local, size):
    assert hpz_partition_size(given, KEY, world, local, DeepSpeedConfigError) == size


def test_the_shipped_zeropp_jsons_are_filled_from_the_launch():
    hpz = resolve(HPZ_JSON, world_size=16, local_world_size=8)["zero_optimization"]
    assert hpz["stage"] == 3 and hpz["zero_hpz_partition_size"] == 8
    assert not hpz.get("zero_quantized_weights") and not hpz.get("zero_quantized_gradients")
    full = resolve(ZEROPP_JSON, world_size=16, local_world_size=8)["zero_optimization"]
    assert full["zero_hpz_partition_size"] == 8 and full["zero_quantized_weights"] is True
    assert full["zero_quantized_gradients"] is True
    for name in ("zero3", "zero3_hpz", "zero3_zeropp"):  # the same ZeRO-3 otherwise
        zero = json.loads((REPO / f"ds_configs/{name}.json").read_text())["zero_optimization"]
        plain = {k: v for k, v in zero.items() if not k.startswith(("zero_hpz", "zero_quantized"))}
        assert plain == json.loads((REPO / "ds_configs/zero3.json").read_text())["zero_optimization"]


def zero3_with(tmp_path, **options) -> str:
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"zero_optimization": {"stage": 3, **options}}))
    return str(path)


@pytest.mark.parametrize("options, world, local, message", [
    ({"zero_hpz_partition_size": 3}, 4, 2, rf"{KEY}=3: 4 ranks do not split into groups of 3; use a divisor"),
    ({"zero_hpz_partition_size": 8}, 4, 2, rf"{KEY}=8: 4 ranks do not split into groups of 8"),
    ({"zero_hpz_partition_size": "auto"}, 6, 4, rf"{KEY}='auto': 6 ranks do not split into groups of 4"),
    ({"zero_hpz_partition_size": "auto"}, 4, None, rf"{KEY}='auto': the launcher did not say .*LOCAL_WORLD_SIZE"),
    ({"zero_hpz_partition_size": "node"}, 4, 2, rf"{KEY}='node' is neither auto"),
    ({"zero_hpz_partition_size": 2, "stage": 2}, 4, 2, rf"{KEY} is ZeRO\+\+, which only ZeRO-3 has; .*stage=2 would"),
    ({"zero_quantized_gradients": True, "stage": 1}, 4, 2, r"zero_optimization.zero_quantized_gradients is ZeRO"),
    ({"mics_shard_size": 2}, 4, 2, r"zero_optimization.mics_shard_size: DeepSpeed removed MiCS .*hpZ"),
])  # fmt: skip
def test_a_zeropp_key_that_does_not_fit_the_launch_is_one_line_naming_it(tmp_path, options, world, local, message):
    path = zero3_with(tmp_path, **options)
    with pytest.raises(DeepSpeedConfigError, match=rf"^{re.escape(path)}: {message}") as error:
        resolve(path, world_size=world, local_world_size=local)
    assert "\n" not in str(error.value)


def test_quantized_zeropp_is_refused_on_a_cpu_with_one_line(monkeypatch):
    # found by running it: DeepSpeed's CPU accelerator has no QuantizerBuilder (its stand-in raises
    # "not implemented on CPU backend" in zero.Init for qwZ, at the first backward for qgZ)
    assert not quantizer_available()
    precision = Precision("float32", CPU)
    for key in ("zero_quantized_weights", "zero_quantized_gradients"):
        config = {"zero_optimization": {"stage": 3, key: True}}
        with pytest.raises(DeepSpeedConfigError, match=rf"\.{key} \(ZeRO\+\+ qwZ/qgZ\) need .* CUDA only"):
            DeepSpeedStrategy(CPU, precision, 0, 4, config, local_world_size=2)
    with pytest.raises(DeepSpeedConfigError, match="zero_quantized_weights, zero_quantized_gradients .* on cpu"):
        DeepSpeedStrategy(CPU, precision, 0, 4, str(ZEROPP_JSON), local_world_size=2)
    hpz = DeepSpeedStrategy(CPU, precision, 0, 4, str(HPZ_JSON), local_world_size=2)  # hpZ alone runs here
    assert hpz.hpz_partition_size == 2 and hpz.description.startswith("deepspeed ZeRO-3 + hpZ (")
    monkeypatch.setattr("harness.parallel.deepspeed.quantizer_available", lambda: True)  # what a GPU answers
    assert DeepSpeedStrategy(CPU, precision, 0, 4, str(ZEROPP_JSON), local_world_size=2).hpz_partition_size == 2


def test_the_command_line_refuses_quantized_zeropp_on_a_cpu_with_exit_2(demo_root, tmp_path):
    overrides = tiny_overrides(demo_root, tmp_path / "run", "distributed.strategy=deepspeed",
                               f"distributed.deepspeed.config={ZEROPP_JSON}")  # fmt: skip
    command = [sys.executable, "-m", "harness.train", "--config", str(write(tmp_path, "zeropp", overrides))]
    env = {**os.environ, "PYTHONPATH": str(REPO), "DS_ACCELERATOR": "cpu"}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=time_left())
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert "(ZeRO++ qwZ/qgZ) need DeepSpeed's quantizer kernels" in done.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_hpz_on_two_emulated_nodes_equals_zero3_through_a_resume(demo_root, tmp_path):
    # Every parameter of the tiny model is under the shipped persistence threshold (1e6), which
    # keeps such parameters gathered and never partitioned: at 0 every one goes through hpZ.
    def json_file(name: str) -> str:
        config = json.loads((REPO / f"ds_configs/{name}.json").read_text())
        config["zero_optimization"]["stage3_param_persistence_threshold"] = 0
        (tmp_path / f"{name}.json").write_text(json.dumps(config))
        return str(tmp_path / f"{name}.json")

    # 4 ranks x batch 1 = test_strategies' global batch; clipping on; an EMA, which evaluation swaps
    # in and out of the partitions (the second partitions must not keep the swapped-out weights)
    common = ("distributed.strategy=deepspeed", "data.batch_size=1", "optimization.clip_grad=0.5",
              "optimization.ema_decay=0.9")  # fmt: skip

    def config(name: str, ds_json: str, epochs: int, run: str) -> str:
        overrides = tiny_overrides(demo_root, tmp_path / run, *common, f"distributed.deepspeed.config={ds_json}",
                                   f"optimization.epochs={epochs}")  # fmt: skip
        return str(write(tmp_path, name, overrides))

    zero3, hpz = json_file("zero3"), json_file("zero3_hpz")
    entries = [  # plain ZeRO-3 first: DeepSpeed keeps hpZ's groups for the rest of the process
        f"zero3:{config('zero3', zero3, 2, 'zero3')}:",
        f"whole:{config('whole', hpz, 2, 'whole')}:",  # hpZ, uninterrupted
        f"hpz:{config('hpz_a', hpz, 1, 'hpz')}:{config('hpz_b', hpz, 2, 'hpz')}",  # 1 epoch, then resumed
    ]
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "2",
               "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{free_port()}", "--rdzv-id", "zeropp",
               "tests/parallel/hsdp_driver.py", str(tmp_path), *entries]  # fmt: skip
    run_nodes(command, 2)
    plain, whole, resumed = (torch.load(tmp_path / f"{n}.pt", weights_only=True) for n in ("zero3", "whole", "hpz"))
    assert plain["description"] == "deepspeed"
    for run in (whole, resumed):  # read back from the parameters DeepSpeed partitioned: groups of a node
        assert run["description"].startswith("deepspeed ZeRO-3 + hpZ (the weights partitioned again in groups of 2")
        assert run["parameters"] == plain["parameters"]
    for run in (plain, whole, resumed):  # evaluation's swap reaches the second partitions, both ways
        assert run["ema_applied"] and run["restored_after_ema"]
    assert all(max(log["grad_norm"]) > 0.5 for log in plain["logs"]), "clipping was active"
    for rank in range(4):
        assert len(resumed["logs"][rank]["loss"]) == 12, "2 epochs of 6 steps"
        assert resumed["logs"][rank] == whole["logs"][rank], f"rank {rank}: the resume changed a loss or norm"
        # Measured here: the hpZ and ZeRO-3 losses and norms are equal to the bit (the second
        # partitions are copies of the same weights, the reductions are the same); 1e-6 allowed.
        for column in ("loss", "grad_norm"):
            torch.testing.assert_close(torch.tensor(resumed["logs"][rank][column]),
                                       torch.tensor(plain["logs"][rank][column]), rtol=0, atol=1e-6,
                                       msg=f"rank {rank}'s {column}: hpZ against ZeRO-3")  # fmt: skip
    for name in ("final", "ema", "export"):
        assert resumed[name].keys() == whole[name].keys(), name
        assert all(torch.equal(v, whole[name][k]) for k, v in resumed[name].items()), f"{name}: the resume changed it"
        compare(resumed[name], plain[name], f"{name}: hpZ against ZeRO-3")
    # a forward with the average swapped in computes with it (not with second partitions left over
    # from the forward before, which hold the trained weights)
    compare({"logits": resumed["ema_logits"]}, {"logits": plain["ema_logits"]}, "hpZ's forward with the EMA in")
    assert any(not torch.equal(v, plain["final"][k].float()) for k, v in plain["ema"].items()), "the EMA is no copy"
