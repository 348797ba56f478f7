"""``python -m harness.plan`` refuses nonsense numbers up front: one line naming the option and
its valid range, exit status 2 (no division by zero, no negative sizes, no "300% of peak")."""

from pathlib import Path

import pytest

from harness.plan.cli import COUNT, FRACTION, POSITIVE, main
from harness.plan.simulate import Hardware

REPO = Path(__file__).resolve().parent.parent
CONFIG = str(REPO / "configs" / "vitl16_probe.yaml")

BAD = [
    ("--gpus", "0", ">= 1"),
    ("--gpus", "-8", ">= 1"),
    ("--gpus", "two", ">= 1"),
    ("--nodes", "0", ">= 1"),
    ("--gpu-memory", "-80", "> 0"),
    ("--gpu-memory", "0", "> 0"),
    ("--gpu-memory", "nan", "> 0"),
    ("--num-classes", "-3", ">= 1"),
    ("--num-classes", "0", ">= 1"),
    ("--intra-node-gbps", "0", "> 0"),
    ("--inter-node-gbps", "-400", "> 0"),
    ("--inter-node-gbps", "inf", "> 0"),
    ("--compute-efficiency", "0", "<= 1"),
    ("--compute-efficiency", "3", "<= 1"),
    ("--compute-efficiency", "-0.5", "<= 1"),
]


@pytest.mark.parametrize(("option", "value", "range_text"), BAD)
def test_a_nonsense_number_is_one_line_naming_the_option(option, value, range_text, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["--config", CONFIG, f"{option}={value}", "--simulate"])
    assert stopped.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1, errors
    assert f"argument {option}: must be" in errors[0] and range_text in errors[0] and repr(value) in errors[0]


def test_the_edges_of_each_range_are_accepted():
    assert COUNT("1") == 1
    assert FRACTION("1") == 1.0 and FRACTION("0.01") == 0.01
    assert POSITIVE("0.5") == 0.5


@pytest.mark.parametrize(
    "field",
    [
        {"gpus_per_node": 0},
        {"nodes": -1},
        {"inter_node_gbps": 0.0},
        {"intra_node_gbps": -1.0},
        {"efficiency": 3.0},
        {"efficiency": 0.0},
    ],  # fmt: skip
)
def test_hardware_refuses_what_the_prediction_would_divide_by(field):
    with pytest.raises(ValueError, match=next(iter(field))):
        Hardware(**field)


def test_a_config_of_label_sets_plans_a_classifier_of_every_sets_classes(capsys):
    # {verb: 97, noun: 300, action: 3806}: the heads output 4203 logits, as --num-classes 4203 says
    sizes = "meta.label_sets={verb: 97, noun: 300, action: 3806}"
    assert main(["--config", CONFIG, sizes, "meta.num_classes=0"]) == 0
    with_sets = capsys.readouterr().out
    assert main(["--config", CONFIG, "--num-classes", "4203"]) == 0
    assert with_sets == capsys.readouterr().out
    assert main(["--config", CONFIG]) == 0
    assert capsys.readouterr().out != with_sets, "400 classes by default: another parameter count"
