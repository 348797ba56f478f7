"""The troubleshooting table (``docs/troubleshooting.md``) stays true: every row names the tests that run its case,
and every test it names exists (a row nothing runs, or a renamed test, fails here)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEST_REFERENCE = re.compile(r"`(tests/[\w/]+\.py)(?:::(\w+))?`")


def troubleshooting_rows() -> list[str]:
    text = (REPO / "docs" / "troubleshooting.md").read_text(encoding="utf-8")
    section = text.split("# Troubleshooting: what bad input gets\n", 1)[1].split("\n#", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    return rows[1:]  # the header row; the |---| line does not start with "| "


def test_every_troubleshooting_row_names_tests_that_exist():
    rows = troubleshooting_rows()
    assert len(rows) >= 20, "the table was not found whole"
    for row in rows:
        references = TEST_REFERENCE.findall(row)
        assert references, f"this troubleshooting row names no test: {row[:120]}"
        for path, name in references:
            file = REPO / path
            assert file.is_file(), f"docs/troubleshooting.md names {path}, which does not exist: {row[:120]}"
            if name:
                assert re.search(rf"^def {name}\(", file.read_text(encoding="utf-8"), re.M), f"{path}::{name}"
