"""Progress: a bar on a terminal, plain lines (no carriage returns) in a log file."""

import io
import os
import subprocess
import sys

from harness.core.progress import NoProgress, PlainProgress, progress
from tests.deadline import time_left


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_file_gets_plain_lines_with_rate_and_eta(monkeypatch):
    monkeypatch.setenv("HARNESS_PROGRESS_SECONDS", "0")
    stream = io.StringIO()
    bar = progress(total=4, desc="epoch 1/2", unit="step", stream=stream)
    assert isinstance(bar, PlainProgress)
    for _ in range(2):
        bar.update()
    bar.set_postfix(loss="0.5000")
    bar.update(2)
    bar.close()
    text = stream.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert lines[0].startswith("epoch 1/2: 1/4 step (25%), ") and "eta" in lines[0]
    assert lines[-1].startswith("epoch 1/2: 4/4 step (100%), ") and "took" in lines[-1] and "loss=0.5000" in lines[-1]


def test_lines_are_rate_limited(monkeypatch):
    monkeypatch.setenv("HARNESS_PROGRESS_SECONDS", "3600")
    stream = io.StringIO()
    assert list(progress(range(1000), desc="videos", stream=stream)) == list(range(1000))
    assert stream.getvalue().splitlines() == [stream.getvalue().splitlines()[-1]]  # only the final line
    assert "1000/1000" in stream.getvalue()


def test_a_terminal_gets_tqdm_and_off_is_silent():
    from tqdm import tqdm

    terminal = Terminal()
    bar = progress(total=3, desc="x", stream=terminal)
    assert isinstance(bar, tqdm)
    bar.close()
    assert isinstance(progress(range(3), enabled=False), NoProgress)


def test_training_logged_to_a_file_has_no_carriage_returns(demo_root, tmp_path):
    from tests.conftest import tiny_overrides

    extra = ("optimization.epochs=1", "optimization.ipe=2", "optimization.warmup=0", "optimization.anneal=0")
    overrides = [o for o in tiny_overrides(demo_root, tmp_path / "run", *extra)
                 if not o.startswith("logging.progress_bar")]  # fmt: skip
    with open(tmp_path / "slurm.out", "w") as log:  # as SLURM writes a job's output
        done = subprocess.run([sys.executable, "-m", "harness.train", "--config", "configs/demo.yaml", *overrides],
                              stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HARNESS_PROGRESS_SECONDS": "0"},
                              timeout=time_left())  # fmt: skip
    text = (tmp_path / "slurm.out").read_text()
    assert done.returncode == 0, text[-3000:]
    assert "\r" not in text
    assert "epoch 1/1: 2/2 step (100%)" in text
