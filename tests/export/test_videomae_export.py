"""A VideoMAE-family run (its own linear head) trains on the demo, on listings and on shards, and
exports to a directory that ``transformers`` loads as ``VideoMAEForVideoClassification``."""

import csv

import pytest
import torch

from harness.config import load_config
from harness.core.errors import UserError
from harness.export.model_io import load_classifier
from harness.export.writing import export
from harness.training import Trainer
from tests.conftest import tiny_overrides

VIDEOMAE = ("model.model_name=videomae_small", "model.pooler_norm_eps=1e-5", "optimization.epochs=1",
            "logging.level=warning")  # fmt: skip


def test_videomae_trains_on_listings_and_exports_to_transformers(demo_root, tmp_path):
    import transformers  # the test extra installs it

    folder = tmp_path / "run"
    trainer = Trainer(load_config(None, tiny_overrides(demo_root, folder, *VIDEOMAE)))
    assert type(trainer.strategy.unwrap(trainer.model).classifier).__name__ == "LinearClassifier"
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit()
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items()), "nothing trained"
    model, preprocessing = load_classifier(folder)
    clips = torch.randn(2, 1, 3, 4, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = model(clips)
    export(folder, tmp_path / "hf", "hf")
    theirs = transformers.AutoModelForVideoClassification.from_pretrained(tmp_path / "hf").eval()
    assert type(theirs).__name__ == "VideoMAEForVideoClassification"
    with torch.no_grad():
        logits = theirs(pixel_values=clips[:, 0].transpose(1, 2)).logits
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-4)
    assert [theirs.config.id2label[i] for i in range(4)] == preprocessing.class_names
    back, _ = load_classifier(tmp_path / "hf")  # and the harness reads the directory back
    with torch.no_grad():
        torch.testing.assert_close(back(clips), expected, rtol=0, atol=1e-4)


def test_videomae_with_the_attentive_probe_trains_on_shards_and_refuses_an_hf_export(demo_root, demo_shards, tmp_path):
    folder = tmp_path / "run"
    shards = ("data.datasets=[]", "data.val_datasets=[]", f"data.shards=[{demo_shards / 'train/manifest.json'}]",
              f"data.val_shards=[{demo_shards / 'val/manifest.json'}]", "model.classifier=attentive")  # fmt: skip
    Trainer(load_config(None, tiny_overrides(demo_root, folder, *VIDEOMAE, *shards))).fit()
    with open(folder / "epochs.csv", newline="") as handle:
        assert [int(row["val_count"]) for row in csv.DictReader(handle)] == [8]
    with pytest.raises(UserError, match="its classifier is not the linear head"):
        export(folder, tmp_path / "hf", "hf")
