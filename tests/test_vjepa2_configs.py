"""V-JEPA 2's YAML files, unchanged: the seed app's classifier files and V-JEPA 2's eval and
inference files (``tests/fixtures/vjepa2``: copies of the published files, byte for byte)."""

import shutil
from pathlib import Path

import pytest
import torch
import yaml
from vjepa2.models.attentive_pooler import AttentiveClassifier as TheirClassifier
from vjepa2.models.vision_transformer import vit_tiny as their_vit_tiny

from harness.config import ConfigError, load_config, save_config
from harness.train import main
from tests.models.test_vjepa2_compat import vjepa2_eval_checkpoint

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "vjepa2"


@pytest.mark.parametrize("name", ["seed_app_video-classifier.yaml", "seed_vitb16_video-classifier.yaml"])
def test_seed_app_files_load_with_the_seed_meaning(name):
    config = load_config(FIXTURES / name)
    data = config.data
    # fps and frame_step are both set: the seed takes fps and warns (fps > duration > frame_step)
    assert data.fps == 5 and data.frame_step is None and data.duration is None
    assert data.val_fps == 5 and data.val_frame_step is None
    assert any(n.startswith("warning:") and "data.frame_step=4" in n for n in config.notes)
    assert data.val_num_workers == 8 and data.val_random_clip_sampling is False
    assert data.sampling_rule == "vjepa2" and config.model.clip_aggregation == "average_logits"
    assert {"app", "nodes", "tasks_per_node", "cpus_per_task", "mem_per_gpu"} <= set(config.ignored)


def test_seed_sampling_priority_per_loader():
    config = load_config(None, ["data.duration=2.0", "data.frame_step=3", "data.val_frame_step=2"])
    assert (config.data.duration, config.data.frame_step) == (2.0, None)
    assert (config.data.val_frame_step, config.data.val_duration) == (2, None)
    plain = load_config(None, ["data.frame_step=3"])
    assert plain.data.val_frame_step == 3 and not [n for n in plain.notes if n.startswith("warning")]


def test_inference_file_with_multilevel_features_maps_every_key():
    config = load_config(FIXTURES / "inference_vitg-384_diving48.yaml")
    assert (
        config.folder == "/your_folder/evals/vitg-384/diving48/video_classification_frozen/diving48-vitg16-384-32x4x3"
    )
    assert config.meta.eval_only and config.meta.load_checkpoint and not config.meta.finetune_encoder
    assert config.meta.classifier_checkpoint.endswith("diving48-vitg-384-32x4x3.pt")
    assert config.meta.pretrain_checkpoint.endswith("vitg-384.pt") and config.meta.checkpoint_key == "target_encoder"
    assert config.model.model_name == "vit_giant_xformers" and config.model.use_rope and config.model.uniform_power
    assert config.model.out_layers == [24, 29, 34, 39] and config.model.clip_aggregation == "concat_tokens"
    assert (config.model.attn_pooler_depth, config.model.attn_pooler_heads) == (4, 16)
    data = config.data
    assert (data.crop_size, data.dataset_fpcs, data.frame_step) == (384, [32], 2)
    assert (data.num_clips, data.val_num_clips, data.num_views) == (4, 4, 3)
    assert data.allow_clip_overlap and data.sampling_rule == "vjepa2" and data.batch_size == 2
    # use_bfloat16: true is float16 + GradScaler in V-JEPA 2's eval.py (meta.dtype=bfloat16 overrides)
    assert config.meta.num_classes == 48 and config.meta.dtype == "float16"
    assert config.optimization.lr_schedule == "cosine" and config.optimization.epochs == 100
    assert config.optimization.protocol == "vjepa2" and config.optimization.clip_grad is None
    overridden = load_config(FIXTURES / "inference_vitg-384_diving48.yaml", ["meta.dtype=bfloat16"])
    assert overridden.meta.dtype == "bfloat16" and overridden.optimization.protocol == "vjepa2"
    assert {"nodes", "tasks_per_node", "tag", "experiment.optimization.use_pos_embed"} <= set(config.ignored)
    assert "experiment.data.resolution -> data.crop_size" in config.notes


def test_eval_file_with_twenty_heads_gives_twenty_schedules():
    config = load_config(FIXTURES / "eval_vitl_k400.yaml")
    heads = config.optimization.heads
    assert len(heads) == 20 and (heads[0].lr, heads[0].weight_decay) == (0.005, 0.01)
    assert (heads[7].lr, heads[7].start_lr, heads[7].weight_decay, heads[19].final_weight_decay) == (
        0.001,
        0.001,
        0.1,
        0.8,
    )
    assert config.data.num_clips == 8 and config.model.model_name == "vit_large"


def test_unsupported_and_unknown_eval_keys_are_errors_naming_them(tmp_path):
    values = yaml.safe_load((FIXTURES / "inference_vitg-384_ssv2.yaml").read_text())
    values["model_kwargs"]["pretrain_kwargs"]["encoder"]["img_temporal_dim_size"] = 1
    (tmp_path / "images.yaml").write_text(yaml.safe_dump(values))
    with pytest.raises(ConfigError, match=r"img_temporal_dim_size is not supported"):
        load_config(tmp_path / "images.yaml")
    values["model_kwargs"]["pretrain_kwargs"]["encoder"]["img_temporal_dim_size"] = None
    values["experiment"]["data"]["resolutoin"] = 256
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump(values))
    with pytest.raises(ConfigError, match=r"typo.yaml: unknown V-JEPA 2 eval key 'experiment.data.resolutoin'"):
        load_config(tmp_path / "typo.yaml")


def test_overrides_in_either_layout_and_resolved_file_shows_the_mapping(tmp_path):
    overrides = ["experiment.data.resolution=64", "data.num_workers=0"]
    config = load_config(FIXTURES / "inference_vitg-384_ssv2.yaml", overrides)
    assert config.data.crop_size == 64 and config.data.num_workers == 0
    save_config(config, tmp_path / "config.yaml")
    text = (tmp_path / "config.yaml").read_text()
    assert "# experiment.data.num_segments -> data.num_clips" in text and "# ignored: mem_per_gpu" in text
    assert yaml.safe_load(text)["data"]["crop_size"] == 64


def small_eval_overrides(tmp_path, demo_root, probe_blocks: int) -> list[str]:
    """Paths and sizes only: a V-JEPA 2 eval file shrunk to the demo data and a vit_tiny encoder
    (``tmp_path/vitt.pt``), in the file's own layout."""
    return [
        f"folder={tmp_path / 'run'}",
        f"model_kwargs.checkpoint={tmp_path / 'vitt.pt'}",
        "model_kwargs.pretrain_kwargs.encoder.model_name=vit_tiny",
        f"experiment.data.dataset_train={demo_root / 'train.csv'}",
        f"experiment.data.dataset_val={demo_root / 'val.csv'}",
        "experiment.data.resolution=32",
        "experiment.data.frames_per_clip=4",
        "experiment.data.num_classes=4",
        "experiment.classifier.num_heads=3",
        f"experiment.classifier.num_probe_blocks={probe_blocks}",
        "experiment.optimization.num_epochs=1",
        "num_workers=0",
        "meta.dtype=float32",
        "logging.progress_bar=false",
    ]


@pytest.mark.slow
@pytest.mark.parametrize("val_only", [True, False])
def test_inference_file_runs_unchanged_on_small_data(tmp_path, demo_root, val_only):
    """The published ssv2 inference file, with only paths and sizes overridden: a V-JEPA 2
    encoder checkpoint and a V-JEPA 2 probe file (both made by V-JEPA 2's modules) load strictly,
    and the V-JEPA 2 protocol (2 segments x 3 views, tokens concatenated) evaluates or trains."""
    torch.manual_seed(0)
    encoder = their_vit_tiny(img_size=32, num_frames=4, patch_size=16, tubelet_size=2, use_rope=True)
    torch.save({"target_encoder": {f"module.backbone.{k}": v for k, v in encoder.state_dict().items()}, "epoch": 9},
               tmp_path / "vitt.pt")  # fmt: skip
    probe = TheirClassifier(embed_dim=192, num_heads=3, depth=2, num_classes=4)
    torch.save(vjepa2_eval_checkpoint([probe]), tmp_path / "probe.pt")
    shutil.copy(FIXTURES / "inference_vitg-384_ssv2.yaml", tmp_path / "ssv2.yaml")
    overrides = [
        *small_eval_overrides(tmp_path, demo_root, probe_blocks=2),
        f"val_only={str(val_only).lower()}",
        f"classifier_checkpoint={tmp_path / 'probe.pt'}",
    ]
    assert main(["--config", str(tmp_path / "ssv2.yaml"), *overrides]) == 0
    run = tmp_path / "run"  # a folder= override sets our folder exactly (no V-JEPA 2 tag suffix)
    written = yaml.safe_load((run / "config.yaml").read_text())
    assert written["model"]["clip_aggregation"] == "concat_tokens" and written["data"]["num_views"] == 3
    assert (run / ("eval_predictions.csv" if val_only else "best_predictions.csv")).is_file()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["eval_vitl_k400.yaml", "eval_vitl_k400-area-attn.yaml"])
def test_twenty_head_eval_file_trains_every_head(tmp_path, demo_root, name):
    # (the area-attention file runs unchanged too: its encoder computes area attention in blocks
    # [0, 18), with no parameter of its own, so a plain V-JEPA 2 encoder file loads into it)
    torch.manual_seed(0)
    encoder = their_vit_tiny(img_size=32, num_frames=4, patch_size=16, tubelet_size=2, use_rope=True)
    torch.save({"target_encoder": encoder.state_dict()}, tmp_path / "vitt.pt")
    overrides = [*small_eval_overrides(tmp_path, demo_root, probe_blocks=1), "experiment.data.num_segments=2"]
    assert main(["--config", str(FIXTURES / name), *overrides]) == 0
    with open(tmp_path / "run" / "epochs.csv") as handle:
        header, row = handle.read().splitlines()[:2]
    assert "val_top1_h19" in header and "best_head" in header and row
    written = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["model"]
    assert written.get("use_area_attention", False) == ("area-attn" in name)
