"""Every command answers ``--help`` without importing torch, decoders, DeepSpeed or W&B (they
are imported when used), so it answers at once (issue 16: under 3 s; measured in the note, not
asserted: this machine's timings are noisy)."""

import subprocess
import sys

import pytest

COMMANDS = ["harness.train", "harness.evaluate", "harness.consolidate", "harness.prepare", "harness.report",
            "harness.plan", "harness.predict", "harness.embed", "harness.export", "harness.config",
            "harness.datasets"]  # fmt: skip
HEAVY = ("torch", "torchvision", "av", "decord", "torchcodec", "deepspeed", "wandb", "matplotlib", "transformers")
PROBE = """
import runpy, sys
sys.argv = ["{module}", "--help"]
try:
    runpy.run_module("{module}", run_name="__main__", alter_sys=True)
except SystemExit as stop:
    code = stop.code
print("HEAVY:" + ",".join(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)
sys.exit(code)
"""


@pytest.mark.parametrize("module", COMMANDS)
def test_help_imports_nothing_heavy(module):
    done = subprocess.run([sys.executable, "-c", PROBE.format(module=module, heavy=HEAVY)], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout
    heavy = done.stderr.rsplit("HEAVY:", 1)[1].strip()
    assert heavy == "", f"python -m {module} --help imported {heavy}"
