import textwrap

import pytest
import yaml

from harness.config import ConfigError, load_config, save_config, to_dict

VJEPA2_YAML = """
app: vjepa
nodes: 8
tasks_per_node: 8
cpus_per_task: 16
mem_per_gpu: 220G
folder: /checkpoint/ssv2-vitl
data:
  dataset_type: VideoDataset
  datasets: [/data/ssv2/train.csv]
  dataset_fpcs: [16]
  val_datasets: [/data/ssv2/val.csv]
  val_dataset_fpcs: [16]
  batch_size: 4
  val_batch_size: 8
  crop_size: 256
  patch_size: 16
  tubelet_size: 2
  fps: 4
  num_clips: 2
  val_num_clips: 2
  num_workers: 8
  pin_mem: true
data_aug:
  auto_augment: true
  horizontal_flip: false
  motion_shift: false
  random_resize_aspect_ratio: [0.75, 1.35]
  random_resize_scale: [0.08, 1.0]
  reprob: 0.25
meta:
  dtype: bfloat16
  load_checkpoint: true
  load_encoder: true
  finetune_encoder: false
  num_classes: 174
  pretrain_checkpoint: /models/vitl.pt
  read_checkpoint: null
  save_every_freq: 5
  seed: 239
  use_sdpa: true
model:
  compile_model: false
  model_name: vit_large
  attn_pooler_depth: 4
  attn_pooler_heads: 16
  uniform_power: true
  use_activation_checkpointing: true
  use_rope: true
  use_silu: false
  wide_silu: true
optimization:
  anneal: 5
  epochs: 20
  final_lr: 0.0
  final_weight_decay: 0.01
  ipe: 300
  lr: 0.0005
  start_lr: 0.0001
  warmup: 2
  weight_decay: 0.01
  enc_lr_scale: 0.1
  betas: [0.9, 0.999]
  eps: 1.0e-8
"""


def write(tmp_path, text, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_vjepa2_yaml_runs_as_it_is(tmp_path):
    config = load_config(write(tmp_path, VJEPA2_YAML))
    assert config.data.fps == 4.0 and config.data.frame_step is None
    assert config.model.attn_pooler_depth == 4 and config.meta.num_classes == 174
    assert config.optimization.eps == 1e-8 and config.data_aug.random_resize_scale == [0.08, 1.0]
    assert sorted(config.ignored) == ["app", "cpus_per_task", "mem_per_gpu", "nodes", "tasks_per_node"]


def test_overrides_apply_after_yaml(tmp_path):
    config = load_config(write(tmp_path, VJEPA2_YAML), ["optimization.lr=1e-4", "data.batch_size=2", "meta.seed=1"])
    assert config.optimization.lr == 1e-4 and config.data.batch_size == 2 and config.meta.seed == 1


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["optimization.lrr=1"], "unknown key 'optimization.lrr'; did you mean 'lr'"),
        (["data.batch_sise=1"], "did you mean 'batch_size'"),
        (["optimisation.lr=1"], "unknown key 'optimisation'; did you mean 'optimization'"),
        (["data.batch_size=eight"], "data.batch_size: expected int, got 'eight'"),
        (["meta.finetune_encoder=maybe"], "meta.finetune_encoder: expected bool"),
        (["data.fps=0"], "fps must be > 0"),
        (["data.sampling_rule=seed"], "data.sampling_rule: 'seed' is not one of"),
        (["meta.dtype=bf16"], "meta.dtype: 'bf16'"),
        (["data.datasets=[a,b]", "data.datasets_weights=[1]"], "datasets_weights has 1 entries for 2"),
        (["optimization.warmup=15", "optimization.anneal=10"], "exceed epochs"),
        (["lr"], "not of the form"),
        (["meta.device=cuad"], "meta.device: 'cuad' is not one of auto, cpu, cuda; did you mean 'cuda'"),
        (["data.repeated_aug=0"], "data.repeated_aug must be in [1, inf), got 0"),
        (["optimization.lr=-1"], "optimization.lr must be in [0, inf), got -1"),
        (["optimization.lr=.nan"], "optimization.lr must be in .*got nan"),
        (["optimization.weight_decay=.inf"], "optimization.weight_decay must be in .*got inf"),
        (["optimization.betas=[0.9, 1.5]"], "optimization.betas must be in [0, 1), got 1.5"),
        (["optimization.eps=0"], "optimization.eps must be in"),
        (["optimization.heads=[{lr: -0.1}]", "meta.finetune_encoder=false"], "optimization.heads[0].lr must be in"),
        (["data.num_workers=-1"], "data.num_workers must be in [0, inf), got -1"),
        (["data.max_failure_fraction=1.5"], "data.max_failure_fraction must be in [0, 1]"),
        (["data.crop_size=225"], "data.crop_size=225 is not a multiple of data.patch_size=16"),
        (["data.crop_size=[224, 330]"], "data.crop_size=[224, 330] (width 330) is not a multiple of data.patch_size"),
        (["data.crop_size=[200, 320]"], "data.crop_size=[200, 320] (height 200) is not a multiple of data.patch_size"),
        (["data.crop_size=[224]"], "data.crop_size=[224]: give one side (a square crop) or [height, width]"),
        (["data.crop_size=[224, 320, 16]"], "data.crop_size=[224, 320, 16]: give one side"),
        (["data.crop_size=[0, 320]"], "data.crop_size must be in [1, inf), got 0"),
        (["data.crop_size=-16"], "data.crop_size must be in [1, inf), got -16"),
        (["data.crop_size=wide"], "data.crop_size: expected int or a list of int, got 'wide'"),
        (["data.crop_size=[224, wide]"], "data.crop_size[1]: expected int, got 'wide'"),
        (["data.dataset_fpcs=[15]"], "data.dataset_fpcs: 15 frames per clip is not a multiple of data.tubelet_size=2"),
        (["data.datasets=[a,b]", "data.dataset_fpcs=[4,8]"], "data.dataset_fpcs: [4, 8] differ"),
        (["data.val_datasets=[a,b]", "data.val_dataset_fpcs=[8,4]"], "data.val_dataset_fpcs: [8, 4] differ"),
        (["data.datasets=[a,b,c]", "data.frame_folder_fps=[25,30]"], "data.frame_folder_fps has 2 entries for 3"),
        (["data.frame_folder_fps=[-25]"], "data.frame_folder_fps must be in [0, inf), got -25"),
        (["data.val_datasets=[a,b]", "data.val_frame_folder_fps=[1,2,3]"], "data.val_frame_folder_fps has 3 entries"),
        (["data_aug.random_resize_scale=[0.9, 0.3]"], "low <= high"),
        (["optimization.ema_decay=1.5"], "ema_decay must be in"),
        (["optimization.layer_decay=0"], "layer_decay must be in"),
        (["loging.log_every=5"], "did you mean 'logging'"),
        (["checkpointing.every_step=5"], "did you mean 'every_steps'"),
    ],
)
def test_config_errors_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        load_config(None, overrides)


def test_crop_size_is_one_side_or_height_and_width(tmp_path):
    assert load_config(None, []).data.crop_size == 224, "square by default"
    assert load_config(None, ["data.crop_size=256"]).data.crop_size == 256
    config = load_config(None, ["data.crop_size=[224, 320]"])
    assert config.data.crop_size == [224, 320]
    save_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml").data.crop_size == [224, 320], "saved and read back as a pair"
    for message in [str(error) for error in _errors(["data.crop_size=[224]", "data.crop_size=[16, 20]"])]:
        assert "\n" not in message and message.startswith("data.crop_size"), "one line naming the key"


def _errors(overrides):
    for override in overrides:
        with pytest.raises(ConfigError) as caught:
            load_config(None, [override])
        yield caught.value


def test_resolved_config_round_trips(tmp_path):
    config = load_config(write(tmp_path, VJEPA2_YAML))
    save_config(config, tmp_path / "resolved.yaml")
    again = load_config(tmp_path / "resolved.yaml")
    assert to_dict(again) == to_dict(config)
    assert "nodes" not in yaml.safe_load((tmp_path / "resolved.yaml").read_text())


def test_fps_alone_replaces_the_default_frame_step():
    config = load_config(None, ["data.duration=2.5"])
    assert config.data.duration == 2.5 and config.data.frame_step is None


GPU_CONFIGS = [f"{size}_{kind}" for size in ("vitl16", "vith16", "vitg16") for kind in ("probe", "finetune")]
SHIPPED = ["demo", "demo_multilabel", "demo_label_sets", *GPU_CONFIGS]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_load_and_fit_their_model(name):
    from pathlib import Path

    from harness.models.registry import encoder_names

    config = load_config(Path(__file__).resolve().parent.parent / "configs" / f"{name}.yaml")
    assert config.model.model_name in encoder_names()
    assert config.data.crop_size % config.data.patch_size == 0
    assert all(fpc % config.data.tubelet_size == 0 for fpc in config.data.dataset_fpcs)
    if name in GPU_CONFIGS:
        assert config.data.crop_size == 256 and config.data.dataset_fpcs == [16]
        assert config.meta.finetune_encoder == name.endswith("finetune")


def test_docs_config_table_is_in_sync():
    from pathlib import Path

    from harness.config import config_table

    page = (Path(__file__).resolve().parent.parent / "docs" / "configuration.md").read_text()
    start, end = "<!-- config-table:start -->\n", "<!-- config-table:end -->"
    block = page[page.index(start) + len(start) : page.index(end)]
    assert block == config_table(), (
        "docs/configuration.md's key table is stale: run `python -m harness.config` and paste its output "
        "between the config-table markers"
    )


def test_every_config_key_is_documented():
    from harness.config import config_table

    rows = [line for line in config_table().splitlines()[2:]]
    assert len(rows) > 80
    assert all(not row.rstrip(" |").endswith("|") and row.split("|")[4].strip() for row in rows)


def test_brace_patterns_in_list_overrides_as_the_readme_writes_them():
    config = load_config(None, ["data.shards=[s3data/shard-{000000..000999}.tar, more/shard-{00..09}.tar]",
                                "data.val_shards=val/shard-{0..3}.tar", "data.datasets=[]"])  # fmt: skip
    assert config.data.shards == ["s3data/shard-{000000..000999}.tar", "more/shard-{00..09}.tar"]
    assert config.data.val_shards == ["val/shard-{0..3}.tar"]
    with pytest.raises(ConfigError, match="override data.crop_size: .* is not a YAML value"):
        load_config(None, ["data.crop_size={224"])


def test_a_run_folder_that_is_a_file_is_a_config_error(tmp_path):
    (tmp_path / "run").write_text("not a folder")
    with pytest.raises(ConfigError, match="folder: .*run exists and is not a folder"):
        load_config(None, [f"folder={tmp_path / 'run'}"])


def test_a_config_file_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "latin.yaml"
    path.write_bytes("folder: runs/caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin.yaml: not UTF-8 text"):
        load_config(path)


@pytest.mark.parametrize("key, sources", [("datasets_weights", "datasets"), ("shards_weights", "shards")])
def test_weights_that_are_all_zero_are_a_config_error(key, sources):
    with pytest.raises(ConfigError, match=rf"data.{key}: \[0.0, 0.0\] are all 0"):
        load_config(None, [f"data.{sources}=[a,b]", f"data.{key}=[0, 0]"])
