"""The real slurm/prepare.sbatch as a 2-task array, its dependent merge, and a run trained from the
merged shards, on a real (single-machine) SLURM cluster."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from harness.config import load_config
from tests.conftest import tiny_overrides
from tests.data.test_prepare import split_content
from tests.slurm.cluster import available

REPO = Path(__file__).resolve().parents[2]
ENV = {"HARNESS_REPO": str(REPO), "HARNESS_PYTHON": sys.executable}  # the python running the tests

pytestmark = [pytest.mark.slow, pytest.mark.skipif(available() is not None, reason=str(available()))]


def test_an_array_prepares_the_parts_a_dependent_job_merges_them_and_a_run_trains(cluster, demo_root, tmp_path):
    from harness.prepare import Settings, prepare
    from harness.training import Trainer

    out = tmp_path / "shards"
    options = ["--input", str(demo_root / "train.csv"), "--val-fraction", "0.25", "--shard-samples", "3"]
    script = str(REPO / "slurm" / "prepare.sbatch")
    array = cluster.submit("--array=0-1", "--cpus-per-task=1", "-o", str(tmp_path / "part-%a.out"), script,
                           *options, "--output", str(out), env=ENV)  # fmt: skip
    merge = cluster.submit(f"--dependency=afterok:{array}", "--cpus-per-task=1", "-o", str(tmp_path / "merge.out"),
                           script, "merge", "--output", str(out), env=ENV)  # fmt: skip
    logs = lambda: "\n".join(p.read_text()[-2000:] for p in sorted(tmp_path.glob("*.out"))) + cluster.logs()  # noqa: E731
    states = cluster.wait_array(array, tasks=2)
    assert sorted(states.values()) == ["COMPLETED", "COMPLETED"], logs()
    assert cluster.wait(merge, kick_requeued=False) == "COMPLETED", logs()
    assert "part 1/2" in (tmp_path / "part-1.out").read_text(), "the task took its part from the array"
    assert "train: 16 clips" in (tmp_path / "merge.out").read_text(), logs()

    # The same clips as one run over the whole input, the same histograms and label map.
    prepare(demo_root / "train.csv", tmp_path / "whole", Settings(shard_samples=3), val_fraction=0.25, workers=1)
    for split in ("train", "val"):
        merged, samples = split_content(out / split)
        whole, whole_samples = split_content(tmp_path / "whole" / split)
        assert samples == whole_samples and merged["parts"] == 2 and merged["complete"]
        assert [merged[k] for k in ("class_histogram", "label_map", "total_clips", "source_videos")] == [
            whole[k] for k in ("class_histogram", "label_map", "total_clips", "source_videos")
        ]
    assert not list(out.glob(".staging*")) and not list(out.glob("*/journal*")), "nothing left behind"

    folder = tmp_path / "run"
    shards = (f"data.shards=[{out / 'train' / 'manifest.json'}]", f"data.val_shards=[{out / 'val' / 'manifest.json'}]",
              "data.datasets=[]", "data.val_datasets=[]", "optimization.epochs=1", "logging.level=warning")  # fmt: skip
    Trainer(load_config(None, tiny_overrides(demo_root, folder, *shards))).fit()
    assert json.loads((folder / "summary.json").read_text())["finished"]
