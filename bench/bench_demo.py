"""The README's demo figure: how long the demo command takes end to end, data generation included.

    python bench/bench_demo.py [--repeat 1]

Each run copies ``configs/demo.yaml`` into a fresh temporary folder and runs the README's command
there, ``python -m harness.train --config configs/demo.yaml`` (a fresh interpreter), so that it
writes a new ``demo_data/`` and ``runs/demo/`` as on a first run. It prints the wall-clock seconds
of each run (interpreter start-up, imports, generating the 128 videos, 15 epochs of training and
evaluation, the summary), the best validation top-1 it reached, and the load average around it:
the README quotes a quiet machine, and other processes on the cores make the figure larger.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_demo(python: str) -> tuple[float, float]:
    """Seconds of one README demo run in a fresh folder, and the best validation top-1 it reached."""
    folder = Path(tempfile.mkdtemp(prefix="bench-demo-"))
    try:
        (folder / "configs").mkdir()
        shutil.copy(REPO / "configs" / "demo.yaml", folder / "configs" / "demo.yaml")
        start = time.perf_counter()
        subprocess.run([python, "-m", "harness.train", "--config", "configs/demo.yaml"], cwd=folder, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        seconds = time.perf_counter() - start
        summary = json.loads((folder / "runs" / "demo" / "summary.json").read_text())
        return seconds, summary["best_top1"]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=1, help="runs, one after the other")
    args = parser.parse_args()
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    print(f"cpu: {cpu}, {os.cpu_count()} cores; python {sys.version.split()[0]}")
    print(f"{'run':>3} {'seconds':>8} {'best top-1':>10} {'load before':>11} {'load after':>10}")
    times = []
    for run in range(args.repeat):
        before = os.getloadavg()[0]
        seconds, top1 = run_demo(sys.executable)
        times.append(seconds)
        print(f"{run:3d} {seconds:8.1f} {top1:10.3f} {before:11.2f} {os.getloadavg()[0]:10.2f}", flush=True)
    print(f"README figure: demo {statistics.median(times):.0f} s (median of {args.repeat}, generation included)")


if __name__ == "__main__":
    main()
