"""The real slurm/train.sbatch on a real (single-machine, two-node) SLURM cluster."""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path

import pytest

from harness.config import load_config, save_config
from tests.conftest import tiny_overrides
from tests.slurm.cluster import Cluster, available

REPO = Path(__file__).resolve().parents[2]
CPU_OPTIONS = ["--gpus-per-node=0", "--cpus-per-task=2"]  # the template asks for GPUs; this cluster has CPUs
# The python running the tests (CI uses .venv-ci, not the template's default .venv).
ENV = {"HARNESS_PROCS_PER_NODE": "2", "HARNESS_REPO": str(REPO), "HARNESS_PYTHON": sys.executable}

pytestmark = [pytest.mark.slow, pytest.mark.skipif(available() is not None, reason=str(available()))]


def config(tmp_path: Path, demo_root: Path, name: str) -> str:
    overrides = tiny_overrides(demo_root, tmp_path / name, "optimization.epochs=3", "data.batch_size=2",
                               "data.crop_size=48", "model.depth=3")  # fmt: skip
    path = tmp_path / f"{name}.yaml"
    save_config(load_config(None, overrides), path)
    return str(path)


def losses(folder: Path, rank: int = 0) -> list[str]:
    with open(folder / f"log_r{rank}.csv", newline="") as handle:
        return [row["loss"] for row in csv.DictReader(handle)]


def submit(cluster: Cluster, tmp_path: Path, name: str, cfg: str, nodes: int) -> int:
    output = str(tmp_path / f"{name}.out")
    return cluster.submit(f"--nodes={nodes}", *CPU_OPTIONS, "-o", output, str(REPO / "slurm/train.sbatch"), cfg,
                          env=ENV)  # fmt: skip


def test_one_node_two_tasks_and_a_warning_signal_requeues_and_resumes_exactly(cluster, demo_root, tmp_path):
    reference = submit(cluster, tmp_path, "reference", config(tmp_path, demo_root, "reference"), nodes=1)
    assert cluster.wait(reference) == "COMPLETED", (tmp_path / "reference.out").read_text()[-3000:] + cluster.logs()
    folder = tmp_path / "reference"
    assert (folder / "log_r0.csv").exists() and (folder / "log_r1.csv").exists()
    assert json.loads((folder / "summary.json").read_text())["finished"]
    assert (folder / "code" / "harness" / "train.py").exists() and (folder / "code" / "config.yaml").exists()
    assert list((folder / "slurm").glob("job-*.log")), "the job log is in the run folder"

    job = submit(cluster, tmp_path, "stopped", config(tmp_path, demo_root, "stopped"), nodes=1)
    log = tmp_path / "stopped" / "log_r0.csv"
    deadline = time.time() + 180
    while (not log.exists() or len(log.read_text().splitlines()) < 4) and time.time() < deadline:
        time.sleep(0.1)
    # What `#SBATCH --signal=B:USR1@300` does before the time limit, now.
    cluster.run("scancel", "--signal=USR1", "--batch", str(job), check=True)
    state = cluster.wait(job)
    output = (tmp_path / "stopped.out").read_text()
    assert state == "COMPLETED", output[-4000:] + cluster.logs()
    assert "requeueing job" in output and "restart 1" in output, output[-3000:]
    assert "stopped by SIGTERM" in output and "resumed from" in output
    assert losses(tmp_path / "stopped") == losses(folder), "the requeued job continued exactly"


def test_two_emulated_nodes_train_as_one_four_rank_job(cluster, demo_root, tmp_path):
    job = submit(cluster, tmp_path, "two", config(tmp_path, demo_root, "two"), nodes=2)
    assert cluster.wait(job) == "COMPLETED", (tmp_path / "two.out").read_text()[-3000:] + cluster.logs()
    folder = tmp_path / "two"
    assert all((folder / f"log_r{rank}.csv").exists() for rank in range(4))
    assert "ddp x 4 rank(s)" in (tmp_path / "two.out").read_text()
    with open(folder / "epochs.csv", newline="") as handle:
        assert [int(row["val_count"]) for row in csv.DictReader(handle)] == [8, 8, 8]
