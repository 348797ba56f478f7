"""Optional packages: ``bench/gpu_check.py`` without DeepSpeed says "not installed" (and how to
install it), not FAIL, and its exit status stays 0; ``harness.export --format hf`` without
transformers names the ``hf`` extra, which setup.py declares."""

import argparse
import ast
import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def gpu_check(monkeypatch):
    spec = importlib.util.spec_from_file_location("gpu_check_under_test", REPO / "bench" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "ROWS", [])

    def time_step(args, strategy, checkpointing, compiled) -> None:  # what the real step needs, no more
        if strategy.startswith("zero"):
            import deepspeed  # noqa: F401

        module.row(f"step {strategy}", True, "timed")

    monkeypatch.setattr(module, "time_step", time_step)
    return module


def test_deepspeed_rows_say_not_installed_when_it_is_missing(gpu_check, monkeypatch):
    monkeypatch.setitem(sys.modules, "deepspeed", None)  # `import deepspeed` fails as if not installed
    gpu_check.check_steps(argparse.Namespace(dry_run=True), [(False, False), (True, False)])
    results = {check: (result, detail) for check, result, detail in gpu_check.ROWS}
    assert results["step single"][0] == "ok" and results["step fsdp"][0] == "ok"
    for strategy in ("zero2", "zero3"):
        assert results[f"step {strategy}"] == (
            "not installed",
            "deepspeed is not installed: pip install 'harness[deepspeed]' to check this strategy",
        )
    assert [check for check, _, _ in gpu_check.ROWS].count("step zero2") == 1, "one row, not one per variant"
    assert gpu_check.exit_status() == 0


def test_a_failing_check_still_fails(gpu_check):
    gpu_check.row("demo end to end", False, "broken")
    assert gpu_check.exit_status() == 1


def test_the_hf_extra_installs_transformers_and_the_missing_module_error_names_it(monkeypatch):
    from packaging.requirements import Requirement

    from harness.core.errors import UserError
    from harness.export.hf import transformers_module

    tree = ast.parse((REPO / "setup.py").read_text())
    extras = ast.literal_eval(next(n.value for n in ast.walk(tree) if isinstance(n, ast.keyword)
                                   and n.arg == "extras_require"))  # fmt: skip
    requirement = Requirement(next(r for r in extras["hf"] if r.startswith("transformers")))
    pinned = dict(line.split("==") for line in (REPO / "constraints.txt").read_text().splitlines() if "==" in line)
    assert pinned["transformers"] in requirement.specifier, "constraints.txt's transformers is outside the range"
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if not installed
    with pytest.raises(UserError, match=r"pip install 'harness\[hf\]'"):
        transformers_module()
