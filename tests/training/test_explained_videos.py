"""``logging.explain_videos``: a few validation videos drawn with the probe's attention per
evaluation, in TensorBoard's event files (read back with its own reader) and an offline W&B run."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from harness.config import load_config
from harness.data.loader import ClipBatch
from harness.training import Trainer
from harness.training.tracking.explained import ExplainedSampler
from tests.conftest import tiny_overrides
from tests.wandb_records import read_run


def test_two_explained_videos_per_evaluation_in_tensorboard_and_wandb(demo_root, tmp_path, monkeypatch):
    from tensorboard.backend.event_processing import event_accumulator

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    folder = tmp_path / "run"
    extra = ("logging.explain_videos=2", "logging.tensorboard=true", "logging.wandb.enabled=true",
             "logging.wandb.thumbnails=0", "optimization.ipe=1", "model.model_name=vit_tiny_rope")  # fmt: skip
    Trainer(load_config(None, tiny_overrides(demo_root, folder, *extra))).fit()  # 2 epochs, crop 32, 4 frames

    events = event_accumulator.EventAccumulator(str(folder / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    tags = sorted(tag for tag in events.Tags()["images"] if tag.startswith("val_explained/"))
    assert tags == ["val_explained/0_right_000", "val_explained/1_right_001"], "the same first videos each time"
    for tag in tags:
        images = events.Images(tag)
        assert len(images) == 2, "one per evaluation"
        strip = Image.open(io.BytesIO(images[-1].encoded_image_string))
        assert strip.size == (4 * 32, 32), "a row of the clip's 4 frames at the 32-pixel crop"
        assert np.asarray(strip).std() > 0

    run = read_run(next((folder / "wandb").glob("offline-run-*/run-*.wandb")))
    logged = [row for row in run["history"] if "val/explained/_type" in row]
    assert len(logged) == 2 and logged[0]["val/explained/_type"] == "images/separated"
    assert logged[0]["val/explained/count"] == 2 and "right_000" in logged[0]["val/explained/captions"][0]
    assert (logged[0]["val/explained/width"], logged[0]["val/explained/height"]) == (4 * 32, 32)


def test_off_by_default_and_nothing_for_a_linear_head(demo_root, tmp_path):
    config = load_config(None, tiny_overrides(demo_root, tmp_path / "a", "optimization.epochs=1"))
    assert config.logging.explain_videos == 0
    trainer = Trainer(config)
    model = trainer.strategy.unwrap(trainer.model)
    assert ExplainedSampler.build(model, config, trainer.class_names, enabled=True) is None
    on = load_config(None, tiny_overrides(demo_root, tmp_path / "b", "logging.explain_videos=3"))
    assert ExplainedSampler.build(model, on, trainer.class_names, enabled=False) is None, "another rank"
    assert ExplainedSampler.build(model, on, trainer.class_names, enabled=True) is not None
    linear = load_config(None, tiny_overrides(demo_root, tmp_path / "c", "logging.explain_videos=3",
                                              "model.classifier=linear"))  # fmt: skip
    linear_model = Trainer(linear)
    assert ExplainedSampler.build(linear_model.strategy.unwrap(linear_model.model), linear, [], True) is None


def test_the_sampler_keeps_the_first_videos_then_unhooks(demo_root, tmp_path):
    config = load_config(None, tiny_overrides(demo_root, tmp_path / "a", "logging.explain_videos=3"))
    trainer = Trainer(config)
    model = trainer.strategy.unwrap(trainer.model).eval()
    sampler = ExplainedSampler.build(model, config, ["right", "left", "down", "up"], enabled=True)
    clips = torch.randint(0, 256, (2, 1, 3, 4, 32, 32), dtype=torch.uint8)
    batch = ClipBatch(clips, torch.tensor([0, 3]), torch.arange(4).repeat(2, 1, 1), ["a.mp4", "b.mp4"])
    with torch.no_grad(), sampler.recording():
        for _ in range(3):
            sampler.observe(batch, model(clips.float()))
        assert sampler._stack is None, "the hooks came off after 3 videos"
    assert [video for video, *_ in sampler.kept] == ["a.mp4", "b.mp4", "a.mp4"]
    pictures = sampler.pictures()
    assert [p.image.shape for p in pictures] == [(32, 4 * 32, 3)] * 3
    assert pictures[1].caption.startswith("b.mp4: label up, predicted ") and pictures[1].tag == "b"


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_clips_drawn_are_the_frames_before_normalisation(dtype):
    from harness.data.transforms import denormalize_clips, normalize_clips

    frames = torch.randint(0, 256, (1, 3, 2, 4, 4), dtype=torch.uint8)
    clips = frames if dtype == torch.uint8 else normalize_clips(frames)
    assert torch.equal(denormalize_clips(clips), frames)


def test_a_multi_head_run_draws_the_best_heads_attention():
    from tests.test_explain import small_model

    model = small_model(heads=2)
    sampler = ExplainedSampler(model, 1, 1, ["right", "left", "down", "up"])
    clips = torch.randint(0, 256, (1, 1, 3, 4, 32, 32), dtype=torch.uint8)
    batch = ClipBatch(clips, torch.tensor([2]), torch.arange(4).repeat(1, 1, 1), ["a.mp4"])
    with torch.no_grad(), sampler.recording():
        sampler.observe(batch, model(clips.float()))
    first, second = sampler.pictures(0)[0], sampler.pictures(1)[0]
    assert first.image.shape == second.image.shape and not np.array_equal(first.image, second.image)
    probabilities = model(clips.float())[0].softmax(-1).detach()
    assert f"({100 * float(probabilities[1].max()):.0f}%)" in second.caption, "the caption is the head's"
