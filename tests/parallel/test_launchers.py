"""The multi-node launch the docs give (docs/scaling.md): ``torchrun --nnodes N --rdzv-backend c10d
--rdzv-endpoint HOST:PORT harness/train.py ...`` started once per node. Here two "nodes" on this
machine, one CPU process each, meet at a c10d rendezvous and train one FSDP2 run together."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from tests.conftest import tiny_overrides
from tests.deadline import time_left
from tests.parallel.test_strategies import ENV, REPO, STRATEGIES, losses, write


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_nodes(command: list[str], nodes: int) -> list[str]:
    """Start ``command`` (a torchrun meeting at a c10d rendezvous) once per emulated node, wait for
    all to succeed; their standard errors."""
    started = [subprocess.Popen(command, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for _ in range(nodes)]  # fmt: skip
    outputs = [node.communicate(timeout=time_left()) for node in started]
    for node, (_, err) in zip(started, outputs):
        assert node.returncode == 0, err[-4000:]
    return [err for _, err in outputs]


@pytest.mark.slow
def test_two_nodes_meet_at_a_c10d_rendezvous_and_train_one_run(demo_root, tmp_path):
    folder = tmp_path / "run"
    config = write(tmp_path, "nodes", tiny_overrides(demo_root, folder, *STRATEGIES["fsdp"], "data.batch_size=2",
                                                     "optimization.epochs=1"))  # fmt: skip
    endpoint = f"127.0.0.1:{free_port()}"
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
               "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", "harness-test",
               "harness/train.py", "--config", str(config)]  # fmt: skip
    run_nodes(command, 2)
    # one run of two ranks, not two runs of one: a log per rank, one checkpoint that says 2 ranks
    assert len(losses(folder, 0)) == len(losses(folder, 1)) > 0
    tag = (folder / "checkpoints" / "latest").read_text().strip()
    meta = json.loads((folder / "checkpoints" / tag / "meta.json").read_text())
    assert meta["world_size"] == 2, meta
