"""The set-up figures quoted in ``docs/installation.md``: how long ``scripts/bootstrap.sh`` takes
into a fresh virtual environment, and how long each command's ``--help`` takes.

    python bench/bench_setup.py            # --help of every command (seconds)
    python bench/bench_setup.py --bootstrap  # plus a full bootstrap into a temporary venv (minutes)

``--help``: each command's ``python -m harness.<command> --help`` in a fresh interpreter, median
of ``--repeat`` runs, next to a bare ``python -c "import argparse"`` measured in the same loop
(the interpreter's own start-up: the ratio is what the command adds). Bootstrap: ``bash
scripts/bootstrap.sh`` with ``HARNESS_VENV`` set to a temporary folder, from nothing to the
installed test extras, with whatever pip's cache holds (the line says how big it was).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COMMANDS = ["train", "evaluate", "consolidate", "prepare", "report", "plan", "predict", "export", "config"]


def timed(command: list[str], **options) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **options)
    return time.perf_counter() - start


def help_times(python: str, repeat: int) -> dict[str, list[float]]:
    times = {name: [] for name in ["(python -c 'import argparse')", *COMMANDS]}
    for _ in range(repeat):  # interleaved, so that load on the machine hits every command alike
        times["(python -c 'import argparse')"].append(timed([python, "-c", "import argparse"], cwd=REPO))
        for name in COMMANDS:
            times[name].append(timed([python, "-m", f"harness.{name}", "--help"], cwd=REPO))
    return times


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--bootstrap", action="store_true", help="also time a bootstrap into a temporary venv")
    args = parser.parse_args()
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    print(f"cpu: {cpu}, {os.cpu_count()} cores; python {sys.version.split()[0]}")
    times = help_times(sys.executable, args.repeat)
    base = statistics.median(times["(python -c 'import argparse')"])
    print(f"--help, median of {args.repeat} fresh interpreters:")
    print(f"{'command':<32} {'median s':>9} {'max s':>7} {'ratio':>6}")
    for name, values in times.items():
        print(f"{name:<32} {statistics.median(values):9.3f} {max(values):7.3f} {statistics.median(values) / base:6.2f}")
    medians = [statistics.median(times[name]) for name in COMMANDS]
    print(f"README figure: --help {min(medians):.2f}-{max(medians):.2f} s (median per command)")
    if args.bootstrap:
        cache = Path(os.environ.get("PIP_CACHE_DIR", Path.home() / ".cache" / "pip"))
        print(f"pip cache before: {folder_size(cache) / 1e6:.0f} MB at {cache}", flush=True)
        venv = Path(tempfile.mkdtemp(prefix="bench-venv-"))
        shutil.rmtree(venv)
        try:
            seconds = timed(["bash", "scripts/bootstrap.sh"], cwd=REPO, env={**os.environ, "HARNESS_VENV": str(venv)})
        finally:
            shutil.rmtree(venv, ignore_errors=True)
        print(f"README figure: bootstrap {seconds:.0f} s (fresh venv, scripts/bootstrap.sh)")


if __name__ == "__main__":
    main()
