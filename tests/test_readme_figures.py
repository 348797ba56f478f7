"""The README's measured figures are the ones a benchmark recorded in ``bench/RESULTS.md``.

Each benchmark that produces a figure the README quotes prints it as ``README figure: <what>
<value>``; its output block is pasted into ``bench/RESULTS.md``. Here every such figure must
appear in the README as recorded, and every figure the README states in the places listed below
must be one recorded there: a re-measured benchmark whose README sentence was not updated (or a
README figure no benchmark produced) fails.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RECORDED = re.compile(r"^README figure: (?P<what>[-\w]+) (?P<value>[\d.]+(?:-[\d.]+)? s)\b", re.MULTILINE)

# what (as the benchmark names it) -> (the benchmark, the README's sentence with the value as a group)
FIGURES = {
    "demo": ("bench/bench_demo.py", r"or network needed; (?P<value>[\d.]+ s) measured"),
    "--help": ("bench/bench_setup.py", r"answers without importing torch.*?\((?P<value>[\d.]+-[\d.]+ s) measured"),
    "bootstrap": ("bench/bench_setup.py", r"Measured on the 2-core CI machine: (?P<value>[\d.]+ s)"),
}


def recorded() -> dict[str, str]:
    text = (REPO / "bench" / "RESULTS.md").read_text()
    return {match["what"]: match["value"] for match in RECORDED.finditer(text)}


def test_every_figure_the_readme_quotes_is_the_one_a_benchmark_recorded():
    readme = " ".join((REPO / "README.md").read_text().split())  # sentences wrap across lines
    figures = recorded()
    for what, (bench, sentence) in FIGURES.items():
        assert f"README figure: {what} " in (REPO / bench).read_text(), f"{bench} does not print the {what} figure"
        assert what in figures, f"bench/RESULTS.md records no '{what}' figure (run {bench})"
        match = re.search(sentence, readme)
        assert match, f"the README's {what} sentence is gone: {sentence}"
        assert match["value"] == figures[what], f"README says {what} {match['value']}, {bench} measured {figures[what]}"


def test_every_recorded_figure_is_in_the_readme():
    assert set(recorded()) == set(FIGURES), "a benchmark records a README figure this test does not check"
