"""An image listing trains a V-JEPA 2.1 probe through the encoder's image path (a video listing
through its video path), in one process (tests/parallel/test_image_strategies.py: under DDP and
FSDP2). 1-frame clips for an encoder without an image path stop the run at once, naming the keys."""

import csv
import re

import pytest
import torch

from harness import train
from harness.config import ConfigError, load_config
from harness.models import create_encoder
from harness.models.pooler import AttentiveClassifier, VideoClassifier
from harness.training import Trainer
from harness.training.tracking.observability import tokens_per_clip
from tests.conftest import tiny_overrides
from tests.images import fit_counting_paths, probe_overrides, tiny_vjepa21_sizes


@pytest.mark.parametrize("listing, frames, path", [("images", 1, "patch_embed_img"), ("videos", 4, "patch_embed")])
def test_a_listing_trains_a_vjepa21_probe_through_its_path(listing, frames, path, image_root, demo_root, tmp_path,
                                                           monkeypatch):  # fmt: skip
    monkeypatch.setitem(*tiny_vjepa21_sizes())
    root = image_root if listing == "images" else demo_root
    trainer = Trainer(load_config(None, probe_overrides(root, tmp_path / "run", frames)))
    result = fit_counting_paths(trainer)
    other = {"patch_embed", "patch_embed_img"} - {path}
    assert result["calls"][path] > 0 and result["calls"][other.pop()] == 0, result["calls"]
    assert result["probe_changed"], "the probe trained"
    with open(tmp_path / "run" / "log_r0.csv", newline="") as handle:
        losses = [float(row["loss"]) for row in csv.DictReader(handle)]
    assert len(losses) == 2 and all(loss == loss and abs(loss) != float("inf") for loss in losses)
    assert trainer.state.last_eval["val_count"] == (4 if listing == "images" else 8), "every validation item once"


def test_one_frame_clips_for_an_encoder_without_an_image_path_stop_at_once(demo_root, tmp_path, capsys):
    (tmp_path / "empty.yaml").write_text("{}\n")
    argv = ["--config", str(tmp_path / "empty.yaml"), *tiny_overrides(demo_root, tmp_path / "run"),
            "data.dataset_fpcs=[1]"]  # fmt: skip
    assert train.main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    expected = (r"config error: data.dataset_fpcs: 1 frame per clip \(images\) needs an encoder with an image path; "
                r"model.model_name=vit_tiny \(vit family\) has none, .*data.tubelet_size=2: use a model with one "
                r"\(vjepa2.1 family, e.g. model.model_name=vjepa2_1_vit_base_384\)")  # fmt: skip
    assert re.match(expected, line), line
    assert not (tmp_path / "run" / "log_r0.csv").exists(), "stopped before any training"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.options.image_patch_embed=false"], "built without its image path (model.options.image_patch_embed"),
        (["data.val_dataset_fpcs=[3]"], "data.val_dataset_fpcs: 3 frames per clip is not a multiple"),
        # images beside a listing of 3-frame clips: refused at start-up, never at the first forward
        (["data.dataset_fpcs=[1,3]"], "data.dataset_fpcs: [1, 3] differ; the clips of one batch are stacked"),
        (["model.level_concat=channels"], "model.level_concat=channels joins the levels of model.out_layers"),
    ],
)
def test_a_vjepa21_model_takes_one_frame_clips_only_through_its_image_path(overrides, message):
    base = ["model.model_name=vjepa2_1_vit_base_384", "data.dataset_fpcs=[1]", "data.val_dataset_fpcs=[1]"]
    config = load_config(None, base)
    assert config.data.dataset_fpcs == [1] and tokens_per_clip(config) == 14 * 14, "one step of 16x16 patches"
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, [*base, *overrides])


def test_one_frame_clips_join_as_vjepa2_evaluates():
    """``concat_tokens`` (V-JEPA 2's evaluation): each view's clips joined along time, one step each."""
    torch.manual_seed(0)
    encoder = create_encoder("vjepa2_1_vit_base_384", embed_dim=16, num_heads=1, depth=4, img_size=32, num_frames=4)
    model = VideoClassifier(encoder, AttentiveClassifier(16, 3, num_heads=1), freeze_encoder=True,
                            clip_aggregation="concat_tokens", temporal_pos_embed=True)  # fmt: skip
    clips = torch.randn(2, 4, 3, 1, 32, 32)  # 2 clips x 2 views of 1 frame
    tokens = model(clips, stage="encode")
    assert tokens.shape == (2, 4, 4, 16), "4 patches of one time step per clip"
    assert model(clips, torch.zeros(2, 4, 1, dtype=torch.long), num_views=2).shape == (2, 3)
