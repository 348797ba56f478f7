"""Every skip in the suite, with the condition under which it skips; none may hold in CI.

``tests/conftest.py`` turns a skip into a failure under ``CI=true`` (``.ci/run`` sets it), so CI
either provides a test's prerequisite or goes red. This file is the list a reader checks: a skip
added anywhere in ``tests/`` without an entry here fails the first test, and the second fails in
CI if any listed condition holds there.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

from tests.conftest import in_ci

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
SKIP_CALL = re.compile(r"pytest\.skip\(|\.skipif\(|importorskip\(|mark\.skip\b|\.xfail\b")


def _slurm_missing() -> bool:
    from tests.slurm.cluster import available

    return available() is not None


def _ffmpeg_missing() -> bool:
    return shutil.which("ffmpeg") is None


def _no_decoder_transforms() -> bool:
    from harness.data.decode import scaling_supported

    return not scaling_supported("torchcodec")


def _tmpfs_unmountable() -> bool:
    from tests.tmpfs import cannot_mount

    return cannot_mount()


# file -> [(text on the skip's line, when it skips, a check that says whether that holds here)]
SKIPS: dict[str, list[tuple[str, str, Callable[[], bool]]]] = {
    "slurm/test_sbatch.py": [("skipif(available()", "SLURM or munge is not installed", _slurm_missing)],
    "slurm/test_prepare_sbatch.py": [("skipif(available()", "SLURM or munge is not installed", _slurm_missing)],
    "tmpfs.py": [
        (
            'pytest.skip(f"a real full disk needs a tmpfs',
            "no tmpfs can be mounted (root or CAP_SYS_ADMIN)",
            _tmpfs_unmountable,
        ),
    ],
    "data/test_decode.py": [
        ('pytest.skip(f"torchcodec', "torchcodec before 0.9 (no torchcodec.transforms)", _no_decoder_transforms),
    ],
    "data/test_prepare.py": [
        ('pytest.skip("the ffmpeg command', "the ffmpeg command is not installed", _ffmpeg_missing),
        ('pytest.skip("the ffmpeg command', "the ffmpeg command is not installed", _ffmpeg_missing),
    ],
}


def skip_lines() -> dict[str, list[str]]:
    """Every line of the suite that can skip a test, by file (relative to ``tests/``)."""
    found: dict[str, list[str]] = {}
    for path in sorted(TESTS.rglob("*.py")):
        if path == Path(__file__).resolve():
            continue
        for line in path.read_text().splitlines():
            if SKIP_CALL.search(line) and not line.lstrip().startswith("#"):
                found.setdefault(path.relative_to(TESTS).as_posix(), []).append(line.strip())
    return found


def test_every_skip_in_the_suite_is_listed_with_its_condition():
    found = skip_lines()
    unlisted = {}
    for name, lines in found.items():
        listed = [fragment for fragment, _, _ in SKIPS.get(name, [])]
        for line in lines:
            match = next((fragment for fragment in listed if fragment in line), None)
            if match is None:
                unlisted.setdefault(name, []).append(line)
            else:
                listed.remove(match)
        if listed:
            unlisted.setdefault(name, []).append(f"listed here but gone from the file: {listed}")
    stale = sorted(set(SKIPS) - set(found))
    assert not unlisted and not stale, f"skips not in tests/test_skips.py SKIPS: {unlisted}; stale entries: {stale}"


def test_no_listed_skip_can_hold_in_ci():
    holding = [f"{name}: {why}" for name, entries in SKIPS.items() for _, why, holds in entries if holds()]
    assert not (in_ci() and holding), f"these tests would skip in CI (a failure there): {holding}"
    ci_script = (REPO / ".ci" / "run").read_text()
    assert "export CI=true" in ci_script, ".ci/run must set CI=true so that a skip fails there"
