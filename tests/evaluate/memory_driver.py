"""Run ``harness.evaluate``'s work in this process (one rank of a torchrun group) and record how far
the process's resident memory rose above where it stood when evaluation began (Linux's peak RSS,
reset first): ``<out>/memory_r<rank>.json``. Used by tests/evaluate/test_evaluate_memory.py."""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from harness.config import load_config  # noqa: E402
from harness.evaluate.run import evaluate_checkpoint  # noqa: E402


def status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def main(config_path: str, probe: str, out: str) -> None:
    config = load_config(config_path)
    import torch  # noqa: F401  (imported before the baseline: its import is not evaluation)

    Path("/proc/self/clear_refs").write_text("5")  # the peak RSS starts again from the current RSS
    baseline = status_kib("VmRSS")
    code = evaluate_checkpoint(config, probe, str(Path(out) / "eval"))
    rank = int(os.environ.get("RANK", "0"))
    grown = (status_kib("VmHWM") - baseline) * 1024
    (Path(out) / f"memory_r{rank}.json").write_text(json.dumps({"code": code, "grown_bytes": grown}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
