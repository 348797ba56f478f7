"""The documentation's measured figures are the ones a benchmark recorded in ``bench/RESULTS.md``.

Each benchmark that produces a figure the README or a ``docs/`` page quotes prints it as ``README
figure: <what> <value>``; its output block is pasted into ``bench/RESULTS.md``. Here every such
figure must appear in the README or the docs as recorded, and every figure they state in the
places listed below (on any page, as often as it appears) must be one recorded there: a
re-measured benchmark whose sentence was not updated (or a figure no benchmark produced) fails.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RECORDED = re.compile(r"^README figure: (?P<what>[-\w]+) (?P<value>[\d.]+(?:-[\d.]+)? s)\b", re.MULTILINE)

# what (as the benchmark names it) -> (the benchmark, the documented sentence with the value as a group)
FIGURES = {
    "demo": ("bench/bench_demo.py", r"or network needed; (?P<value>[\d.]+ s) measured"),
    "--help": ("bench/bench_setup.py", r"answers without importing torch.*?\((?P<value>[\d.]+-[\d.]+ s) measured"),
    "bootstrap": ("bench/bench_setup.py", r"Measured on the 2-core CI machine: (?P<value>[\d.]+ s)"),
}


def recorded() -> dict[str, str]:
    text = (REPO / "bench" / "RESULTS.md").read_text()
    return {match["what"]: match["value"] for match in RECORDED.finditer(text)}


def documentation() -> dict[str, str]:
    """README.md and every docs/ page, by path, each with its whitespace folded (sentences wrap)."""
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    return {str(page.relative_to(REPO)): " ".join(page.read_text(encoding="utf-8").split()) for page in pages}


def test_every_figure_the_documentation_quotes_is_the_one_a_benchmark_recorded():
    pages = documentation()
    assert "docs/installation.md" in pages, "the docs pages were not found"
    figures = recorded()
    for what, (bench, sentence) in FIGURES.items():
        assert f"README figure: {what} " in (REPO / bench).read_text(), f"{bench} does not print the {what} figure"
        assert what in figures, f"bench/RESULTS.md records no '{what}' figure (run {bench})"
        stated = [(page, match["value"]) for page, text in pages.items() for match in re.finditer(sentence, text)]
        assert stated, f"the {what} sentence is gone from README.md and docs/: {sentence}"
        for page, value in stated:
            assert value == figures[what], f"{page} says {what} {value}, {bench} measured {figures[what]}"


def test_every_recorded_figure_is_checked_here():
    assert set(recorded()) == set(FIGURES), "a benchmark records a README figure this test does not check"
