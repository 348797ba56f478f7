import json
from pathlib import Path

import pytest

from harness.config import load_config
from harness.training import Trainer

DEMO = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"


@pytest.mark.slow
def test_demo_config_generates_data_and_learns_motion_direction(tmp_path):
    # The shipped demo config as it is, only moved to a temporary folder: it generates the
    # videos, trains the tiny ViT through the real loaders and must beat 25% chance clearly.
    data = tmp_path / "demo_data"
    overrides = [
        f"folder={tmp_path / 'run'}",
        f"data.datasets=[{data / 'train.csv'}]",
        f"data.val_datasets=[{data / 'val.csv'}]",
        "logging.progress_bar=false",
    ]
    Trainer(load_config(DEMO, overrides)).fit()
    assert (data / "train.csv").is_file() and len(list((data / "train").glob("*.mp4"))) == 96
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["best_top1"] >= 0.6, summary
    assert (tmp_path / "run" / "best_confusion.png").is_file()
