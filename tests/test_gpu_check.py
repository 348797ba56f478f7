"""The prepared GPU check (``bench/gpu_check.py``) runs its dry run on the CPU, so it cannot rot
before a GPU machine is lent: every check runs and passes (the HSDP rows on their 2-D mesh), and
the table is printed."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.deadline import time_left

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_gpu_check_dry_run_passes_every_check():
    done = subprocess.run([sys.executable, "bench/gpu_check.py", "--dry-run"], cwd=REPO, capture_output=True,
                          text=True, timeout=time_left())  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    table = done.stdout[done.stdout.index("| check | result | detail |") :]
    rows = [line.split(" | ") for line in table.splitlines()[2:] if line.startswith("| ")]
    checks = {cells[0].lstrip("| ") for cells in rows}
    assert all(cells[1] == "ok" for cells in rows), table
    for expected in ("sdpa flash_attention fwd+bwd vs math", "bf16 autocast, fp32 head", "step single +compile",
                     "uint8 normalisation on the device", "step fsdp +ckpt", "step zero2", "step zero3 +ckpt",
                     "frozen probe held", "frozen probe grouped", "frozen probe all", "demo end to end",
                     "step hsdp", "step hsdp +ckpt", "step hsdp_offload", "Meta's fixtures on the device"):  # fmt: skip
        assert expected in checks, f"{expected!r} missing from the table"
