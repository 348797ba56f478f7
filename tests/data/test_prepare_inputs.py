"""``python -m harness.prepare`` refuses settings that cannot work (one line naming the options,
exit status 2, nothing written), and one output folder (one part of it) takes one prepare at a
time: a second is refused naming the holder; a lock left by a killed prepare is taken over."""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from harness.prepare import Part, main
from harness.prepare import run as prepare_run
from harness.prepare.lock import OutputInUse, acquire, release

REPO = Path(__file__).resolve().parents[2]


def error_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]


def test_short_segments_lower_the_default_minimum(tmp_path, monkeypatch):
    seen = {}

    def record(input_path, output, settings, *rest):
        seen["s"] = settings
        return {"splits": {}, "skipped": []}

    monkeypatch.setattr(prepare_run, "prepare", record)
    assert main(["--input", str(tmp_path), "--output", str(tmp_path / "out"), "--segment-seconds", "0.5"]) == 0
    assert seen["s"].min_seconds == 0.5, "with the default --min-seconds 1.0 every 0.5 s clip would be dropped"
    assert main(["--input", str(tmp_path), "--output", str(tmp_path / "out"), "--segment-seconds", "4"]) == 0
    assert seen["s"].min_seconds == 1.0


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--segment-seconds", "0.5", "--min-seconds", "1"], ["--segment-seconds 0.5", "--min-seconds 1"]),
        (["--segment-seconds", "0"], ["--segment-seconds must be > 0"]),
        (["--segment-seconds", "nan"], ["--segment-seconds must be > 0"]),
        (["--min-seconds", "-1"], ["--min-seconds must be >= 0"]),
        (["--shard-size", "0"], ["--shard-size must be > 0"]),
        (["--shard-samples", "0"], ["--shard-samples must be > 0"]),
        (["--fps", "-30"], ["--fps must be > 0"]),
        (["--val-fraction", "1.5"], ["--val-fraction must be in [0, 1)"]),
    ],
)
def test_settings_that_cannot_work_are_one_line_naming_the_options(options, named, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--input", str(tmp_path), "--output", str(out), *options]) == 2
    errors = error_lines(capsys)
    assert len(errors) == 1 and all(text in errors[0] for text in named), errors
    assert not out.exists(), "nothing is written before the settings are checked"


def test_chunked_clips_are_not_held_to_the_segment_length():
    settings = prepare_run.Settings(segment_seconds=10, min_seconds=12)
    prepare_run.check_settings(settings, 0.1, chunked=True)  # packed as they are: no refusal
    with pytest.raises(prepare_run.UserError, match="--min-seconds"):
        prepare_run.check_settings(settings, 0.1, chunked=False)


HOLD = """
import sys, time
from pathlib import Path
from harness.prepare.lock import acquire
from harness.prepare.parts import Part
acquire(Path(sys.argv[1]), Part())
print("held", flush=True)
time.sleep(120)
"""


def test_a_second_prepare_into_the_same_output_is_refused_naming_the_holder(tmp_path, capsys):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["--input", str(tmp_path), "--output", str(out)]) == 2
        errors = error_lines(capsys)
        assert len(errors) == 1, errors
        expected = (
            f"{out} is being prepared by another harness.prepare (PID {holder.pid} on {socket.gethostname()}, since "
        )
        assert expected in errors[0], errors
        assert json.loads((out / ".lock").read_text())["pid"] == holder.pid, "the holder's lock is left as it was"
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    descriptor = acquire(out, Part())  # the killed prepare's lock is taken over
    try:
        assert json.loads((out / ".lock").read_text())["pid"] == os.getpid()
    finally:
        release(descriptor)


def test_parts_of_one_output_run_side_by_side_but_each_part_once(tmp_path):
    first, second = acquire(tmp_path, Part(0, 2)), acquire(tmp_path, Part(1, 2))
    try:
        with pytest.raises(OutputInUse, match=rf"part 1/2 of {tmp_path} is being prepared .*PID {os.getpid()}"):
            acquire(tmp_path, Part(1, 2))
    finally:
        release(first)
        release(second)
    release(acquire(tmp_path, Part(1, 2)))  # given back: free again
