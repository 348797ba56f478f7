"""Every entry point ends a user's mistake the same way: one clear line, exit status 2, no traceback
(unless debugging), and a bug of ours keeps its traceback."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from torch.utils.data import DataLoader, Dataset

from harness import prepare, train
from harness.config import cli as config_cli
from harness.consolidate import cli as consolidate
from harness.core.errors import UserError, entry_point, message_of
from harness.data.files import TooManyDecodeFailures
from harness.evaluate import cli as evaluate
from harness.plan import cli as plan
from harness.report import cli as report
from tests.conftest import tiny_overrides
from tests.deadline import time_left

REPO = Path(__file__).resolve().parent.parent


def bad_val_label(root: Path, tmp: Path) -> Path:
    listing = tmp / "val.csv"
    lines = (root / "val.csv").read_text().splitlines()
    lines[3] = lines[3].rsplit(" ", 1)[0] + " 9"
    listing.write_text("\n".join(lines) + "\n")
    return listing


CASES = {
    "train": lambda root, tmp: (train.main, ["--config", "none", *tiny_overrides(root, tmp / "run"),
                                             f"data.val_datasets=[{bad_val_label(root, tmp)}]"],
                                r"config error: data.val_datasets: .*val.csv:4: label 9 is not one of the 4 classes"),
    "evaluate": lambda root, tmp: (evaluate.main, ["--config", "none", "--checkpoint", str(tmp / "nothing"),
                                                   *tiny_overrides(root, tmp / "run")],
                                   r"error: checkpoint not found: .*nothing"),
    "prepare": lambda root, tmp: (prepare.main, ["--input", str(tmp / "missing.csv"), "--output", str(tmp / "out")],
                                  r"error: .*missing.csv: listing file not found"),
    "consolidate": lambda root, tmp: (consolidate.main, [str(tmp), str(tmp / "out")],
                                      r"error: .* is not a harness checkpoint folder"),
    "plan": lambda root, tmp: (plan.main, ["--config", "none", "optimization.lr=-1"],
                               r"config error: optimization.lr must be in \[0, inf\), got -1"),
    "report": lambda root, tmp: (report.main, [str(tmp)], r"error: .*log_r0.csv is missing or empty"),
    "config": lambda root, tmp: (config_cli.main, ["--config", "none", "--get", "data.nothing"],
                                 r"config error: unknown key 'data.nothing'"),
}  # fmt: skip


@pytest.fixture(autouse=True)
def no_config_file(monkeypatch, tmp_path):
    """``--config none``: an empty YAML file, so that the overrides say everything."""
    monkeypatch.chdir(tmp_path)
    Path("none").write_text("{}\n")


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_user_error_is_one_line_and_status_2(name, demo_root, tmp_path, capsys):
    main, argv, expected = CASES[name](demo_root, tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert re.match(expected, last), last


def test_debug_shows_the_traceback_too(demo_root, tmp_path, capsys, monkeypatch):
    main, argv, expected = CASES["plan"](demo_root, tmp_path)
    monkeypatch.setenv("HARNESS_DEBUG", "1")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "ConfigError" in err
    assert "config error: optimization.lr must be in" in err.strip().splitlines()[-1]


def test_a_bug_keeps_its_traceback():
    @entry_point
    def broken(argv=None):
        return {}["missing"]

    with pytest.raises(KeyError):
        broken([])

    @entry_point
    def refused(argv=None):
        raise UserError("first line\nsecond line")

    assert refused([]) == 2


class _Failing(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, index):
        raise TooManyDecodeFailures("12 videos failed to decode, more than max_failure_fraction=0.01")


def test_an_error_raised_in_a_dataloader_worker_keeps_its_own_message():
    with pytest.raises(TooManyDecodeFailures) as caught:
        next(iter(DataLoader(_Failing(), num_workers=1)))
    assert "Original Traceback" in str(caught.value), "torch puts the worker's traceback in the message"
    assert message_of(caught.value) == "12 videos failed to decode, more than max_failure_fraction=0.01"


def test_the_command_line_exits_2_with_one_line(demo_root, tmp_path):
    listing = bad_val_label(demo_root, tmp_path)
    command = [sys.executable, "-m", "harness.train", "--config", "none",
               *tiny_overrides(demo_root, tmp_path / "run"), f"data.val_datasets=[{listing}]"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=time_left())
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("config error: data.val_datasets: ")
    assert not (tmp_path / "run" / "log_r0.csv").exists(), "stopped before any training"
