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


#: Every command line in a README/docs code block, by its form, and where that form is run: a test
#: file (or CI step) and a string that file uses to run it. A new command in the docs fails
#: :func:`test_every_command_in_the_docs_runs_somewhere` until it is added here with its test.
COMMAND = re.compile(r"^(?:\$ )?(?:\.venv/bin/)?(python|harness-|torchrun|deepspeed|sbatch|bash|srun|pip)\b")
STRATEGIES = "tests/parallel/test_strategies.py"
RUN_BY: list[tuple[str, list[tuple[str, str]]]] = [
    (r"bash scripts/bootstrap\.sh && \.venv/bin/python -m harness\.train --config configs/demo\.yaml",
     [(".ci/run", "bash scripts/bootstrap.sh"), ("tests/test_demo.py", '"configs" / "demo.yaml"')]),
    (r"bash scripts/bootstrap\.sh && \.venv/bin/python -m pytest", [(".ci/run", "-m pytest")]),
    (r"python -m harness\.train --config configs/eval/", [("tests/test_vjepa2_configs.py", "experiment.data.")]),
    (r'python -m harness\.train --config \S+ "data\.shards=', [("tests/test_train_cli.py", "data.shards=")]),
    (r"python -m harness\.train --config", [("tests/test_train_cli.py", '"-m", "harness.train"')]),
    (r"python harness/train\.py --config", [("tests/test_train_cli.py", '"harness/train.py"')]),
    (r"torchrun --nproc-per-node \d+ harness/train\.py",
     [(STRATEGIES, '"--nproc-per-node", "2", "harness/train.py"')]),
    (r"torchrun --nnodes \d+ .*--rdzv-backend c10d",
     [("tests/parallel/test_launchers.py", '"--rdzv-backend", "c10d"')]),
    (r"deepspeed --num_gpus \d+ harness/train\.py", [(STRATEGIES, '"--num_gpus", "2", "harness/train.py"')]),
    (r"sbatch slurm/train\.sbatch", [("tests/slurm/test_sbatch.py", "slurm/train.sbatch")]),
    (r"sbatch .*slurm/prepare\.sbatch merge", [("tests/slurm/test_prepare_sbatch.py", "merge")]),
    (r"python -m harness\.plan --config \S+ --gpus \d+ --nodes \d+ --suggest",
     [("tests/test_plan_suggest.py", '"--suggest"')]),
    (r"python -m harness\.plan --config \S+ --gpus \d+ --nodes \d+", [("tests/parallel/test_plan.py", '"--nodes"')]),
    (r"python -m harness\.evaluate --config \S+ --checkpoint",
     [("tests/training/test_trainer.py", '"--checkpoint"')]),
    (r"python -m harness\.predict \S+ \S+ --output", [("tests/test_predict.py", '"--output"')]),
    (r"python -m harness\.embed \S+ \S+ --output \S+ --model-name", [("tests/test_embed.py", '"--model-name"')]),
    (r"python -m harness\.embed \S+ \S+ --output \S+ --window-seconds",
     [("tests/test_embed.py", '"--window-seconds"')]),
    (r"python -m harness\.embed \S+ \S+ --output", [("tests/test_embed.py", '"--output"')]),
    (r"python -m harness\.embed \S+ \S+ \S+ --output \S+ --features", [("tests/test_neighbours.py", '"--features"')]),
    (r"python -m harness\.embed\.neighbours \S+ \S+", [("tests/test_neighbours.py", "import main, names_of")]),
    (r"torchrun --nproc-per-node \d+ -m harness\.embed", [("tests/test_embed.py", '"-m", "harness.embed"')]),
    (r"python -m harness\.predict \S+ (?:\S+ )+--explain", [("tests/test_explain.py", '"--explain"')]),
    (r"python -m harness\.export \S+ \S+ --format",
     [("tests/test_file_errors.py", '"--format"'), ("tests/test_demo.py", "export(")]),
    (r"python -m harness\.prepare --input \S+ --output \S+ --segment-seconds",
     [("tests/data/test_prepare.py", '"--segment-seconds"')]),
    (r"python -m harness\.datasets \S+ --annotations \S+ --videos",
     [("tests/datasets/test_converters.py", '"--annotations"')]),
    (r"python -m harness\.datasets folders --videos \S+ --output \S+ --val-fraction",
     [("tests/datasets/test_converters.py", '"--val-fraction"')]),
    (r"python -m harness\.datasets ek100 --annotations \S+ --frames", [("tests/datasets/test_ek100.py", '"--frames"')]),
    (r"python -m harness\.report \S+", [("tests/test_observability.py", "report_main(")]),
    (r"pip install -e ", [("tests/test_install.py", '"pip", "install"')]),
    (r'python -c "import torch; print\(torch\.__version__\)"', [("tests/test_install.py", "torch.__version__")]),
]  # fmt: skip


def doc_commands() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        for block in re.findall(r"```[a-z]*\n(.*?)```", page.read_text(encoding="utf-8"), re.S):
            found += [(page.name, line.strip()) for line in block.splitlines() if COMMAND.match(line.strip())]
    return found


def test_every_command_in_the_docs_runs_somewhere():
    commands = doc_commands()
    assert len(commands) > 15, "the docs' code blocks were not read"
    unmatched = [f"{page}: {line}" for page, line in commands if not any(re.search(p, line) for p, _ in RUN_BY)]
    assert not unmatched, "commands in the docs that no test runs (add the test and a RUN_BY entry):\n" + "\n".join(
        unmatched
    )
    for pattern, places in RUN_BY:
        assert any(re.search(pattern, line) for _, line in commands), f"RUN_BY entry {pattern!r} matches no command"
        for path, marker in places:
            assert marker in (REPO / path).read_text(encoding="utf-8"), f"{path} does not run {pattern!r} ({marker!r})"
