import pytest

from harness.demo import main


@pytest.mark.slow
def test_demo_learns_motion_direction(tmp_path):
    # Generates the dataset, trains through the real loaders, evaluates: well above 25% chance.
    accuracy = main(["--root", str(tmp_path / "demo"), "--epochs", "12", "--workers", "2"])
    assert (tmp_path / "demo" / "train.csv").is_file()
    assert accuracy >= 0.6
