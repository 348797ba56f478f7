"""The strategy registry is the one place that knows strategies by name."""

import re
from pathlib import Path

import pytest

from harness.config import CHOICES
from harness.parallel.registry import PLAN_ROWS, STRATEGY_SPECS, strategy_spec
from harness.parallel.strategy import DistributedStrategy, Strategy

HARNESS = Path(__file__).resolve().parents[2] / "harness"


def test_config_choices_come_from_the_registry():
    assert CHOICES["distributed.strategy"] == ("auto", *STRATEGY_SPECS)
    for spec in STRATEGY_SPECS.values():
        implementation = spec.implementation()
        assert issubclass(implementation, Strategy) and implementation.name == spec.name
        assert issubclass(implementation, DistributedStrategy) == (spec.name != "single")


def test_no_module_outside_parallel_names_a_strategy():
    names = "|".join(STRATEGY_SPECS)
    pattern = re.compile(rf"""["']({names})["']""")
    offenders = [f"{path.relative_to(HARNESS)}:{number}: {line.strip()}"
                 for path in HARNESS.rglob("*.py") if "parallel" not in path.parts
                 for number, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]  # fmt: skip
    assert not offenders, offenders


@pytest.mark.parametrize("saved, saved_ranks, now, now_ranks, problem", [
    ("single", 1, "ddp", 2, None),
    ("ddp", 2, "single", 1, None),
    ("fsdp", 2, "fsdp", 1, None),
    ("fsdp", 2, "ddp", 2, "written by distributed.strategy=fsdp, this run uses ddp"),
    ("deepspeed", 2, "deepspeed", 2, None),
    ("deepspeed", 2, "deepspeed", 4, "of 2 ranks and this run has 4: its partitions do not reshard on load"),
])  # fmt: skip
def test_which_checkpoints_a_strategy_resumes(saved, saved_ranks, now, now_ranks, problem):
    found = strategy_spec(now).resume_problem(saved, saved_ranks, now_ranks)
    assert (found is None) if problem is None else (problem in found)


def test_every_distributed_strategy_has_planner_rows():
    assert [name for name, row in PLAN_ROWS.items() if row.listed] == [
        "ddp", "fsdp", "fsdp+offload", "hsdp", "zero1", "zero2", "zero3", "zero3+offload", "zero3+hpz"
    ]  # fmt: skip
    with pytest.raises(KeyError, match="unknown strategy 'horovod'"):
        strategy_spec("horovod")
