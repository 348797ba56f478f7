"""The README and the docs/ pages point at things that exist: every relative link names a file
(and, with an anchor, a heading of that page), every ``python -m harness.<x>`` is a runnable
module, every ``harness-<x>`` a console script of setup.py, and every repository path in
backquotes is there. A renamed module, page, heading or command fails here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
MODULE = re.compile(r"-m harness\.([\w.]+)")
SCRIPT = re.compile(r"(?<![\w/.-])harness-(\w+)\b")
REPO_PATH = re.compile(r"`((?:harness|tests|bench|configs|ds_configs|slurm|scripts|docs)/[^`\s]*)`")


def page_id(page: Path) -> str:
    return str(page.relative_to(REPO))


def anchors(page: Path) -> set[str]:
    """GitHub's anchors for the headings of ``page`` (outside code blocks)."""
    found, fenced = set(), False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (heading := re.match(r"#{1,6} (.*)", line)):
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
            found.add(slug)
    return found


def console_scripts() -> set[str]:
    setup = (REPO / "setup.py").read_text(encoding="utf-8")
    return set(re.findall(r'"harness-(\w+)=harness\.[\w.]+:\w+"', setup))


def runnable(module: str) -> bool:
    """Whether ``python -m harness.<module>`` finds something to run (a module, or a package with
    a ``__main__.py``), looked up as files so that nothing is imported."""
    path = REPO / "harness" / Path(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__main__.py").is_file()


def test_the_pages_are_there():
    names = {page.name for page in PAGES}
    expected = {"README.md", "architecture.md", "configuration.md", "data.md", "scaling.md", "training.md",
                "troubleshooting.md", "vjepa2.md", "benchmarks.md", "installation.md", "models.md"}  # fmt: skip
    assert expected <= names, f"missing pages: {sorted(expected - names)}"


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_relative_link_points_at_an_existing_file_and_heading(page):
    text = page.read_text(encoding="utf-8")
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        assert file.exists(), f"{page_id(page)} links to {target}, which does not exist"
        if anchor:
            assert file.suffix == ".md", f"{page_id(page)}: {target} has an anchor into a file that is not a page"
            assert anchor in anchors(file), f"{page_id(page)} links to {target}: no such heading in {file.name}"


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_command_named_is_a_real_module_or_console_script(page):
    text = page.read_text(encoding="utf-8")
    for module in set(MODULE.findall(text)):
        assert runnable(module), f"{page_id(page)} names `python -m harness.{module}`, which does not run"
    scripts = console_scripts()
    assert "train" in scripts, "setup.py's console scripts were not found"
    for script in set(SCRIPT.findall(text)):
        assert script in scripts, f"{page_id(page)} names harness-{script}, which setup.py does not install"


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_repository_path_named_exists(page):
    text = page.read_text(encoding="utf-8")
    for path in set(REPO_PATH.findall(text)):
        if any(mark in path for mark in "{<*$"):  # patterns such as configs/vit{l,h,g}16_probe.yaml
            continue
        path = path.split(":")[0].rstrip(".,;")  # tests/x.py::test_name, harness/train.py:main
        assert (REPO / path).exists(), f"{page_id(page)} names {path}, which does not exist"
