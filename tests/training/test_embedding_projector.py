"""``logging.embedding_projector``: the probe's vectors of a few validation videos per evaluation,
in TensorBoard's projector files and an offline W&B table, equal to ``harness.embed``'s ``probe``
feature of the same model on the same videos."""

import csv
import json

import numpy as np
import pytest
import torch

from harness.config import load_config
from harness.data.loader import ClipBatch
from harness.embed.cli import main as embed_main
from harness.embed.shard_files import read_shard
from harness.embed.store import read_index
from harness.training import Trainer
from harness.training.tracking.projector import ProjectorSampler
from tests.conftest import tiny_overrides


def test_the_probe_vectors_of_three_videos_in_tensorboard_and_wandb(demo_root, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    folder = tmp_path / "run"
    extra = ("logging.embedding_projector=3", "logging.tensorboard=true", "logging.wandb.enabled=true",
             "logging.wandb.thumbnails=0", "optimization.ipe=1", "model.model_name=vit_tiny_rope",
             "data.num_clips=2", "data.val_num_clips=2")  # fmt: skip
    Trainer(load_config(None, tiny_overrides(demo_root, folder, *extra))).fit()  # 2 epochs

    # TensorBoard: one projector entry per evaluation (a folder per step), 3 rows each
    steps = sorted((folder / "tensorboard").glob("*/val_probe"), key=lambda p: int(p.parent.name))
    assert len(steps) == 2, "one per evaluation"
    vectors = np.loadtxt(steps[-1] / "tensors.tsv", delimiter="\t", ndmin=2)
    with open(steps[-1] / "metadata.tsv", newline="") as handle:
        metadata = list(csv.reader(handle, delimiter="\t"))
    assert metadata[0] == ["video", "label", "predicted"] and len(metadata) == 4 and vectors.shape == (3, 192)
    assert [row[0].rsplit("/", 1)[-1] for row in metadata[1:]] == ["right_000.mp4", "right_001.mp4", "left_000.mp4"]
    assert all(row[1] in ("right", "left") and row[2] in ("right", "left", "down", "up") for row in metadata[1:])
    assert "val_probe" in (folder / "tensorboard" / "projector_config.pbtxt").read_text()

    # the same vectors as harness.embed's probe feature of the final weights (2 clips averaged)
    out = tmp_path / "emb"
    videos = [row[0] for row in metadata[1:]]
    assert embed_main([str(folder / "checkpoints" / "latest"), *videos, "--output", str(out), "--features", "probe",
                       "--workers", "0", "--no-progress"]) == 0  # fmt: skip
    rows = read_index(out)
    embedded = read_shard(out, rows[0]["shard"])["probe"]
    np.testing.assert_allclose(vectors, embedded, rtol=0, atol=1e-4)  # (the .tsv holds ~7 digits)

    # W&B: a table per evaluation with the embedding column W&B projects
    tables = sorted((folder / "wandb").glob("offline-run-*/files/media/table/val/embeddings_*.table.json"))
    assert len(tables) == 2
    table = json.loads(tables[-1].read_text())
    assert table["columns"] == ["video", "label", "predicted", "embedding"] and len(table["data"]) == 3
    np.testing.assert_allclose(np.array([row[3] for row in table["data"]]), embedded, rtol=0, atol=1e-5)


def test_off_by_default_on_the_main_rank_only_and_for_linear_heads_too(demo_root, tmp_path):
    config = load_config(None, tiny_overrides(demo_root, tmp_path / "a", "optimization.epochs=1"))
    assert config.logging.embedding_projector == 0
    trainer = Trainer(config)
    model = trainer.strategy.unwrap(trainer.model)
    assert ProjectorSampler.build(model, config, trainer.class_names, enabled=True) is None
    on = load_config(None, tiny_overrides(demo_root, tmp_path / "b", "logging.embedding_projector=2"))
    assert ProjectorSampler.build(model, on, trainer.class_names, enabled=False) is None, "another rank"
    linear = load_config(None, tiny_overrides(demo_root, tmp_path / "c", "logging.embedding_projector=2",
                                              "model.classifier=linear"))  # fmt: skip
    linear_model = Trainer(linear).model.eval()
    sampler = ProjectorSampler.build(linear_model, linear, ["a", "b", "c", "d"], enabled=True)
    clips = torch.randn(3, 1, 3, 4, 32, 32)
    batch = ClipBatch(clips, torch.tensor([0, 1, 2]), torch.zeros(3, 1, 4, dtype=torch.long), ["x", "y", "z"])
    with sampler.recording(), torch.no_grad():
        logits = linear_model(clips)
        sampler.observe(batch, logits)
        logits = linear_model(clips)  # the hooks came off after the first 2 videos
        assert not sampler.captured[0]
    projected = sampler.projected()
    head = linear_model.classifier
    with torch.no_grad():
        expected = head.fc_norm(linear_model.encoder(clips[:, 0]).mean(1))[:2]
    np.testing.assert_allclose(projected.vectors, expected.numpy(), rtol=0, atol=1e-6)
    assert projected.videos == ["x", "y"] and projected.labels == ["a", "b"]


@pytest.mark.parametrize("bad", ["-1", "many"])
def test_a_bad_count_is_refused_when_the_config_loads(bad):
    from harness.config import ConfigError

    with pytest.raises(ConfigError, match="logging.embedding_projector"):
        load_config(None, [f"logging.embedding_projector={bad}"])


def test_a_grid_of_probe_heads_logs_the_best_heads_vectors(demo_root, tmp_path, monkeypatch):
    """Three heads; the evaluation names head 2 the best (forced: a seconds-long run ties them all,
    and a tie goes to head 0, which would not tell the heads apart); the trainer logs head 2's
    vectors, those harness.embed reads from the run (its best head)."""
    from harness.training import trainer
    from tests.training.test_multihead import HEADS

    def evaluate_naming_head_2(*args, **kwargs):
        result, accumulator = real_evaluate(*args, **kwargs)
        result.best_head = 2
        return result, accumulator

    real_evaluate = trainer.evaluate
    monkeypatch.setattr(trainer, "evaluate", evaluate_naming_head_2)

    folder = tmp_path / "run"
    extra = ("logging.embedding_projector=2", "logging.tensorboard=true", "optimization.epochs=1",
             "meta.finetune_encoder=false", "model.model_name=vit_tiny_rope", HEADS)  # fmt: skip
    Trainer(load_config(None, tiny_overrides(demo_root, folder, *extra))).fit()
    from harness.training.state.checkpoint import read_checkpoint_meta, resolve_checkpoint

    best = read_checkpoint_meta(resolve_checkpoint(folder))["best_head"]
    (step,) = (folder / "tensorboard").glob("*/val_probe")
    vectors = np.loadtxt(step / "tensors.tsv", delimiter="\t", ndmin=2)
    with open(step / "metadata.tsv", newline="") as handle:
        videos = [row[0] for row in list(csv.reader(handle, delimiter="\t"))[1:]]
    out = tmp_path / "emb"
    assert embed_main([str(folder), *videos, "--output", str(out), "--features", "probe", "--workers", "0",
                       "--no-progress"]) == 0  # fmt: skip
    embedded = read_shard(out, read_index(out)[0]["shard"])["probe"]
    assert best == 2 and vectors.shape == embedded.shape == (2, 192)
    np.testing.assert_allclose(vectors, embedded, rtol=0, atol=1e-4)
