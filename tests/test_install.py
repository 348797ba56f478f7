"""Installing into an environment that already has another torch within the declared range: the
harness keeps that torch (setup.py declares ranges; only constraints.txt pins), ``pip check``
passes, and the demo trains there, on one process and on two FSDP2 ranks. The lowest torch of
the range is the one installed (the rest of the suite runs on the pinned torch only)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deadline import time_left

REPO = Path(__file__).resolve().parent.parent
LOWEST = {"torch": "2.9.1", "torchvision": "0.24.1", "torchcodec": "0.8.*"}  # the matching builds


def declared(package: str) -> str:
    """The requirement ``setup.py`` declares for ``package``."""
    text = (REPO / "setup.py").read_text()
    return re.search(rf'"({package}[<>=!,.\d]+)"', text).group(1)


def test_setup_declares_ranges_and_the_lock_pins_inside_them():
    from packaging.requirements import Requirement

    pinned = dict(line.split("==") for line in (REPO / "constraints.txt").read_text().splitlines() if "==" in line)
    for package in ("torch", "torchvision", "torchcodec"):
        requirement = Requirement(declared(package))
        assert "==" not in str(requirement.specifier), f"setup.py pins {package}: installing would replace it"
        assert pinned[package] in requirement.specifier, f"constraints.txt's {package} is outside the range"
    assert LOWEST["torch"] in Requirement(declared("torch")).specifier
    assert LOWEST["torchvision"] in Requirement(declared("torchvision")).specifier
    assert "-c" in (REPO / "scripts" / "bootstrap.sh").read_text(), "bootstrap installs with the lock"


@pytest.mark.slow
@pytest.mark.timeout(1200)  # two installs of torch (~7 GB) and three runs: minutes on a loaded machine
def test_install_into_an_environment_with_the_lowest_torch_keeps_it_and_trains(tmp_path):
    venv = tmp_path / "venv"
    try:
        _install_and_train(venv, tmp_path)
    finally:
        shutil.rmtree(venv, ignore_errors=True)  # about 7 GB (PyPI's torch 2.9.1 is a CUDA build)


def _install_and_train(venv: Path, tmp_path: Path) -> None:
    python = str(venv / "bin" / "python")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)

    def pip(*args: str) -> None:
        done = subprocess.run([python, "-m", "pip", "install", "-q", *args], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]

    pip(*(f"{name}=={version}" for name, version in LOWEST.items()))  # the cluster's own environment
    pip("-e", str(REPO))  # as docs/installation.md says: no constraints file
    report = "import torch, torchvision; print(torch.__version__, torchvision.__version__)"
    versions = subprocess.run([python, "-c", report], capture_output=True, text=True, check=True).stdout.split()
    assert [v.split("+")[0] for v in versions] == [LOWEST["torch"], LOWEST["torchvision"]], "torch was replaced"
    check = subprocess.run([python, "-m", "pip", "check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    data = tmp_path / "demo_data"
    overrides = [f"folder={tmp_path / 'run'}", f"data.datasets=[{data / 'train.csv'}]",
                 f"data.val_datasets=[{data / 'val.csv'}]", f"data.class_names={data / 'classes.txt'}",
                 "optimization.epochs=2", "optimization.warmup=0", "optimization.anneal=1",
                 "logging.progress_bar=false"]  # fmt: skip
    done = subprocess.run([python, "-m", "harness.train", "--config", "configs/demo.yaml", *overrides], cwd=REPO,
                          capture_output=True, text=True, timeout=time_left())  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "decoder torchcodec" in done.stderr, "the torchcodec built for that torch decodes"
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["finished"]
    # The torch API that changed most between 2.9 and 2.14 is FSDP2's: 2 ranks shard and train.
    overrides = [f"folder={tmp_path / 'fsdp'}", *overrides[1:4], "optimization.epochs=1", "optimization.warmup=0",
                 "optimization.anneal=1", "logging.progress_bar=false", "distributed.strategy=fsdp"]  # fmt: skip
    torchrun = [python, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "harness.train"]
    done = subprocess.run([*torchrun, "--config", "configs/demo.yaml", *overrides], cwd=REPO, capture_output=True,
                          text=True, timeout=time_left())  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "fsdp" / "summary.json").read_text())["finished"]
    assert (tmp_path / "fsdp" / "log_r1.csv").exists() and "fsdp" in done.stderr, done.stderr[-2000:]
