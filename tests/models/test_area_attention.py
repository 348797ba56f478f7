"""V-JEPA 2's spatiotemporal area attention (``use_area_attention``) against Meta's own code:
encoders it built with area attention and saved load strictly and give its outputs after every
block, on grids the splits divide and on grids they do not (tests/fixtures/area_attention/
README.md); its eval YAMLs with area attention translate; a run with it trains; what Meta's code
refuses, or what would change nothing, is one error line naming the key."""

from pathlib import Path

import pytest
import torch
import yaml

from harness.config import ConfigError, load_config
from harness.models import VideoClassifier, create_encoder, load_encoder
from harness.models.areas import area_blocks, area_layout, area_sizes
from harness.models.flops import attention_flops, encoder_forward_flops
from harness.models.hf_vjepa2 import incompatibility
from harness.models.pooler import AttentiveClassifier
from harness.models.vit_family import AREA_OPTIONS
from harness.parallel.activation_checkpoint import apply_activation_checkpointing
from harness.training import Trainer
from harness.training.model_parts import build_encoder
from tests.conftest import tiny_overrides

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
RECORD = torch.load(FIXTURES / "area_attention" / "outputs.pt")
ENCODERS = RECORD["encoders"]
CASES = [(name, case) for name, record in ENCODERS.items() for case in record["cases"]]


def fixture_encoder(name, area=True, **overrides):
    """The harness encoder of a fixture's Meta arguments (``area=False``: without area attention);
    sin-cos fixtures are built without it: Meta's blocks there keep full attention."""
    settings = ENCODERS[name]["settings"]
    sizes = ("img_size", "num_frames", "patch_size", "tubelet_size", "embed_dim", "depth", "num_heads", "mlp_ratio",
             "use_rope", "use_silu", "uniform_power")  # fmt: skip
    options = {key: settings[key] for key in AREA_OPTIONS} if area and settings["use_rope"] else {}
    return create_encoder("vit_tiny", **{key: settings[key] for key in sizes if key in settings}, **options,
                          **overrides)  # fmt: skip


def case_input(name, case):
    return RECORD["inputs"][ENCODERS[name]["cases"][case]["input"]].float() / 64


def every_block(encoder, x):
    """The final norm of the tokens after every block (Meta's ``out_layers``), as a list."""
    encoder.out_layers = tuple(range(encoder.depth))
    with torch.no_grad():
        return list(encoder(x).chunk(encoder.depth, dim=1))


@pytest.mark.parametrize("name, case", CASES)
@pytest.mark.parametrize("use_sdpa", [True, False], ids=["sdpa", "math"])
def test_every_block_equals_metas(name, case, use_sdpa):
    encoder = fixture_encoder(name, use_sdpa=use_sdpa)
    report = load_encoder(encoder, FIXTURES / "area_attention" / f"{name}.pt")
    assert not (report.missing or report.unexpected or report.mismatched)
    expected = ENCODERS[name]["cases"][case]["levels"]
    for index, (ours, theirs) in enumerate(zip(every_block(encoder.eval(), case_input(name, case)), expected)):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5, msg=f"block {index}")


@pytest.mark.parametrize("name", ["rope", "rope_variant"])
def test_the_blocks_are_metas_and_full_attention_would_not_match(name):
    encoder = fixture_encoder(name)
    metas = [index for index, kind in enumerate(ENCODERS[name]["attention"]) if kind == "RoPEAreaAttention"]
    assert list(encoder.area_blocks) == metas and metas  # [0, 3) by default; [1, 3) given
    full = fixture_encoder(name, area=False)
    assert full.state_dict().keys() == encoder.state_dict().keys()  # no parameter added, same keys
    load_encoder(full, FIXTURES / "area_attention" / f"{name}.pt")
    for case, record in ENCODERS[name]["cases"].items():
        last = every_block(full.eval(), case_input(name, case))[-1]
        assert (last - record["levels"][-1]).abs().max() > 1e-2, f"{case}: the fixture cannot tell"


def test_metas_rules_for_layers_areas_and_grouping():
    assert area_blocks(24, None) == tuple(range(18)) == area_blocks(24, [0, 18])  # the eval files' [0, 18]
    assert area_blocks(4, None) == (0, 1, 2) and area_blocks(4, [-5, 2]) == (0, 1) and area_blocks(4, [3, 1]) == ()
    # time and rows cut in bands of t // splits (the last takes the rest); columns never cut
    assert area_sizes((8, 16, 16), 2, 2) == [512] * 4 and area_sizes((3, 5, 3), 2, 2) == [6, 9, 12, 18]
    assert area_sizes((2, 4, 4), 2, 3) == [8, 8, 8, 8, 0, 0]  # fewer time steps than splits: empty bands
    equal = area_layout((2, 4, 4), 2, 2, "cpu")
    assert equal.keys is None and (equal.chunks, equal.length) == (4, 8)
    assert equal.order[:8].tolist() == [0, 1, 2, 3, 4, 5, 6, 7] and equal.order[8:12].tolist() == [8, 9, 10, 11]
    # unequal areas: chunks of the largest area's length, each attending to its first size(area j) keys
    uneven = area_layout((3, 5, 3), 2, 2, "cpu")
    assert (uneven.chunks, uneven.length) == (3, 18) and uneven.keys.sum(dim=1).tolist() == [6, 9, 12]
    assert (uneven.order == 45).sum() == 9 and torch.equal(uneven.order[uneven.inverse], torch.arange(45))


def test_a_grid_leaving_tokens_without_keys_is_refused_in_one_line():
    encoder = fixture_encoder("rope")
    with pytest.raises(ValueError) as error:
        encoder(torch.zeros(1, 3, 4, 2, 8))  # one row of patches: (2, 1, 4), areas [4, 0, 4, 0]
    message = str(error.value)
    assert "\n" not in message and "2x1x4" in message and "at least 2 rows of patches" in message


def test_activation_checkpointing_and_gradients_reach_every_parameter():
    torch.manual_seed(0)
    encoder = fixture_encoder("rope_variant")
    x = case_input("rope_variant", "uneven")
    expected = encoder(x)
    expected.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters())
    apply_activation_checkpointing(encoder.blocks)
    torch.testing.assert_close(encoder(x), expected, rtol=0, atol=0)


def test_flops_count_the_area_chunks():
    common = dict(img_size=16, patch_size=2, tubelet_size=2, embed_dim=12, depth=4, mlp_ratio=1.0)  # noqa: C408
    encoder = create_encoder("vit_tiny_rope", **common, num_heads=1, use_area_attention=True)
    full = encoder_forward_flops(frames=8, **common)
    grid = (4, 8, 8)  # 256 tokens, 4 equal areas of 64
    assert attention_flops(grid, 12, (2, 2)) == attention_flops(grid, 12) // 4 == 4 * 4 * 64**2 * 12
    saved = attention_flops(grid, 12) - attention_flops(grid, 12, (2, 2))
    assert encoder.forward_flops(8, 16, 16) == full - 3 * saved  # blocks 0-2 of 4
    # (3, 5, 5): areas [10, 15, 20, 30] -> 3 chunks of 30 (padding included, as the kernel computes it)
    assert attention_flops((3, 5, 5), 12, (2, 2)) == 4 * 3 * 30**2 * 12


def test_metas_area_attention_eval_files_translate_unchanged():
    for name, folder in [("k400", "k400-vitl16-16x8x3-16f-area-attn"), ("ssv2", "ssv2-vitl16-16x2x3-16f-area-attn")]:
        config = load_config(FIXTURES / "vjepa2" / f"eval_vitl_{name}-area-attn.yaml")
        model = config.model
        assert (model.model_name, model.use_rope, model.uniform_power) == ("vit_large", True, True)
        assert model.use_area_attention and model.area_attention_layers == [0, 18]
        assert (model.area_spatial_splits, model.area_temporal_splits, model.area_residual_scale) == (2, 2, 1.0)
        assert config.folder.endswith(folder) and config.meta.checkpoint_key == "target_encoder"
        encoder_keys = "model_kwargs.pretrain_kwargs.encoder"
        assert f"{encoder_keys}.area_attention_layers -> model.area_attention_layers" in config.notes
        assert len(config.optimization.heads) == 20


@pytest.mark.parametrize(
    "changes, reason",
    [({"use_rope": False}, "without use_rope"), ({"use_area_attention": False}, "without use_area_attention")],
)
def test_area_keys_metas_encoder_ignores_are_reported_ignored(tmp_path, changes, reason):
    values = yaml.safe_load((FIXTURES / "vjepa2" / "eval_vitl_k400-area-attn.yaml").read_text())
    values["model_kwargs"]["pretrain_kwargs"]["encoder"].update(changes)
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump(values))
    config = load_config(tmp_path / "eval.yaml")
    assert not config.model.use_area_attention and config.model.area_attention_layers is None
    assert "model_kwargs.pretrain_kwargs.encoder.area_spatial_splits" in config.ignored
    assert any("ignored" in note and reason in note for note in config.notes)


def test_a_run_with_area_attention_trains_one_step(demo_root, tmp_path):
    overrides = tiny_overrides(demo_root, tmp_path / "run", "model.model_name=vit_tiny_rope",
                               "model.use_area_attention=true", "model.area_attention_layers=[0,1]",
                               "optimization.epochs=1", "optimization.ipe=1", "data.val_datasets=[]")  # fmt: skip
    trainer = Trainer(load_config(None, overrides))
    before = trainer.model.encoder.blocks[0].attn.qkv.weight.detach().clone()
    trainer.fit()
    encoder = trainer.model.encoder
    assert encoder.area_blocks == (0,) and encoder.blocks[0].attn.area_attention
    assert not torch.equal(encoder.blocks[0].attn.qkv.weight, before)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.use_area_attention=true"], "model: use_area_attention needs use_rope"),
        (["model.use_rope=true", "model.use_area_attention=true", "model.area_attention_layers=[0,1,2]"],
         r"model: area_attention_layers=\[0, 1, 2\]: V-JEPA 2 reads two block indices \[start, end\)"),
        (["model.use_rope=true", "model.area_spatial_splits=4"],
         "model: area_spatial_splits=4 changes nothing without use_area_attention"),
        (["model.use_rope=true", "model.options.use_area_attention=true", "model.options.area_temporal_splits=0"],
         "model: area_temporal_splits=0: must be a whole number >= 1"),
        (["model.use_rope=true", "model.area_temporal_splits=0"], "model.area_temporal_splits"),
        (["model.model_name=videomae_small", "model.use_area_attention=true"],
         "model.use_area_attention is an option of the vit family"),
        (["model.use_rope=true", "model.use_area_attention=true", "model.area_spatial_splits=3"],
         "model: area attention on a 2x2x2 .* token grid with area_spatial_splits=3 .* at least 3 rows of patches"),
    ],
)  # fmt: skip
def test_refused_values_are_one_line_naming_the_key(demo_root, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message) as error:
        build_encoder(load_config(None, tiny_overrides(demo_root, tmp_path, *overrides)), device="meta")
    assert "\n" not in str(error.value)


def test_hugging_face_export_is_refused_for_area_attention():
    encoder = create_encoder("vit_tiny_rope", img_size=32, num_frames=4, depth=2, use_area_attention=True)
    model = VideoClassifier(encoder, AttentiveClassifier(encoder.embed_dim, 4, num_heads=3))
    assert "area attention" in incompatibility(model, {"model": {}})
