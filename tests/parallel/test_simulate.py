"""The simulated cluster step (``harness.plan --simulate``): the real FSDP2 code at 64 ranks on fake
tensors, its collectives, its memory against the planner, its prediction."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.config import load_config
from harness.plan.memory import count_parameters, plan
from harness.plan.simulate import Hardware, predict, simulate
from tests.deadline import time_left

REPO = Path(__file__).resolve().parents[2]
MEDIUM = ["model.model_name=vit_small", "model.depth=4", "data.crop_size=128", "data.dataset_fpcs=[8]",
          "data.batch_size=4", "meta.dtype=bfloat16", "meta.finetune_encoder=true", "data.frame_step=2"]  # fmt: skip


@pytest.fixture(scope="module")
def simulated():
    config = load_config(None, MEDIUM)
    return config, simulate(config, Hardware("h100", 8, 8), num_classes=10)


def test_collectives_are_fsdp2s_per_unit(simulated):
    config, sim = simulated
    counts = count_parameters(config, 10)
    units = counts.depth + 1  # each block, then the root
    gathers, gathered_bytes = sim.collectives["all_gather"]
    scatters, scattered_bytes = sim.collectives["reduce_scatter"]
    assert scatters == units  # one reduce-scatter of each unit's gradients per step
    assert gathers == 2 * units  # forward, and again in backward (reshard_after_forward)
    assert scattered_bytes >= 4 * counts.trainable and scattered_bytes < 4 * counts.trainable * 1.01  # fp32 grads
    assert gathered_bytes >= 2 * counts.total  # bf16 weights, at least once


def test_memory_agrees_with_the_planner(simulated):
    config, sim = simulated
    fsdp = next(row for row in plan(config, 64, 10) if row.strategy == "fsdp")
    simulated_total = sum(sim.memory.values())
    assert sim.memory["activations"] > sim.memory["weights"] > 0
    assert 0.85 < simulated_total / fsdp.total < 1.15, (sim.memory, fsdp)


def test_prediction_follows_bandwidth_and_compute(simulated):
    _, sim = simulated
    assert sim.step_s >= max(sim.compute_s, sim.communication_s) and 0 < sim.mfu <= 0.45
    slow = predict(type(sim)(Hardware("h100", 8, 8, inter_node_gbps=40.0), sim.memory, sim.collectives, sim.flops))
    assert slow.communication_s == pytest.approx(sim.communication_s * 10)
    one_node = predict(type(sim)(Hardware("h100", 8, 1), sim.memory, sim.collectives, sim.flops))
    assert one_node.communication_s < sim.communication_s  # NVLink inside a node


@pytest.mark.slow
def test_plan_simulate_command_at_64_ranks():
    command = [sys.executable, "-m", "harness.plan", "--config", "configs/demo.yaml", "--gpus", "8", "--nodes", "8",
               "--gpu-memory", "0.05", "--simulate", *MEDIUM]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=time_left())
    assert done.returncode == 0, done.stderr[-3000:]
    assert "simulated fsdp step at 64 ranks (8 node(s) x 8)" in done.stdout
    assert "predicted on h100" in done.stdout and "MFU" in done.stdout
    assert "does NOT fit in 0.05 GiB" in done.stdout  # said before any job waits in a queue
