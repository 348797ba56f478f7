"""The vjepa2.1 family against Meta's own V-JEPA 2.1 code: encoders it built and saved in its
checkpoint layouts load strictly and give its outputs at every hierarchical level, on the video
and image paths, with and without RoPE interpolation (tests/fixtures/vjepa21/README.md); 2.0 and
2.1 files are refused by each other's models in one line; meta-device builds equal direct ones."""

from pathlib import Path

import pytest
import torch

from harness.models import FAMILIES, CheckpointError, EncoderSettings, create_encoder, load_encoder, materialize
from harness.models.family import DeferredBlocks, layer_decay_scale, materialize_stem
from harness.models.flops import encoder_forward_flops
from harness.models.vit21 import hierarchical_layers
from harness.parallel.activation_checkpoint import apply_activation_checkpointing

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "vjepa21"
OUTPUTS = torch.load(FIXTURES / "outputs.pt")["encoders"]
CASES = [(name, case) for name, record in OUTPUTS.items() for case in record["cases"]]
FAMILY = FAMILIES["vjepa2.1"]


def fixture_encoder(name, out_layers=None, level_concat=None, **overrides):
    """The harness encoder of a fixture's size and options (Meta's arguments, translated), unloaded."""
    settings = OUTPUTS[name]["settings"]
    options = {
        "interpolate_rope": settings["interpolate_rope"],
        "modality_embedding": settings["modality_embedding"],
        "image_patch_embed": settings["img_temporal_dim_size"] == 1,
        "use_silu": settings["use_silu"],
        **overrides,
    }
    return create_encoder("vjepa2_1_vit_base_384", embed_dim=settings["embed_dim"], depth=settings["depth"],
                          num_heads=settings["num_heads"], mlp_ratio=settings["mlp_ratio"],
                          patch_size=settings["patch_size"], tubelet_size=settings["tubelet_size"],
                          out_layers=out_layers, level_concat=level_concat, **options)  # fmt: skip


def case_input(name, case):
    record = OUTPUTS[name]
    return record["inputs"][record["cases"][case]["input"]].float() / 64


def loaded(name, case="video", out_layers=None, level_concat=None):
    encoder = fixture_encoder(name, out_layers, level_concat, **OUTPUTS[name]["cases"][case]["overrides"])
    load_encoder(encoder, FIXTURES / f"{name}.pt")
    return encoder.eval()


@pytest.mark.parametrize("name, case", CASES)
def test_every_level_equals_metas(name, case):
    levels = OUTPUTS[name]["hierarchical_layers"]
    expected = OUTPUTS[name]["cases"][case]["levels"]
    encoder = loaded(name, case, out_layers=levels)
    x = case_input(name, case)
    with torch.no_grad():
        ours = encoder.forward_levels(x)
        assert len(ours) == len(expected) == 4
        for level, (mine, theirs) in enumerate(zip(ours, expected)):
            torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-5, msg=f"level {levels[level]}")
        # the family's default: levels along channels, Meta's hierarchical output (torch.cat(hier, dim=2))
        assert encoder.feature_dim == 4 * encoder.embed_dim
        torch.testing.assert_close(encoder(x), torch.cat(expected, dim=2), rtol=0, atol=1e-5)
        encoder.level_concat = "tokens"  # model.level_concat: tokens, as V-JEPA 2.0's multi-level wrapper
        assert encoder.feature_dim == encoder.embed_dim
        torch.testing.assert_close(encoder(x), torch.cat(expected, dim=1), rtol=0, atol=1e-5)
        # without out_layers: the output norm only (Meta's default forward)
        encoder.out_layers = None
        torch.testing.assert_close(encoder(x), expected[-1], rtol=0, atol=1e-5)


def test_a_subset_of_levels_and_the_image_path_choice():
    encoder = loaded("released", out_layers=(5, 11), level_concat="tokens")
    expected = OUTPUTS["released"]["cases"]["image"]["levels"]
    with torch.no_grad():
        out = encoder(case_input("released", "image"))
    torch.testing.assert_close(out, torch.cat([expected[1], expected[3]], dim=1), rtol=0, atol=1e-5)
    assert out.shape == (2, 2 * 9, 16)  # a 1-frame input: tubelet 1, 3x3 patches, per level


def test_a_level_concat_that_does_not_exist_is_an_error():
    with pytest.raises(ValueError, match="level_concat 'time'"):
        fixture_encoder("released", out_layers=(11,), level_concat="time")


@pytest.mark.parametrize("name, key", [("released", "ema_encoder"), ("variant", "target_encoder")])
def test_metas_layouts_load_strictly_with_a_report(name, key):
    encoder = fixture_encoder(name)
    report = load_encoder(encoder, FIXTURES / f"{name}.pt")
    assert not (report.missing or report.unexpected or report.mismatched)
    assert report.loaded == sorted(encoder.state_dict())
    saved = torch.load(FIXTURES / f"{name}.pt")[key]
    assert all(torch.equal(value, saved[f"module.backbone.{k}"]) for k, value in encoder.state_dict().items())
    if name == "variant":  # the online encoder is read only when asked for
        load_encoder(encoder, FIXTURES / f"{name}.pt", key="encoder")
        assert torch.equal(encoder.patch_embed.proj.bias, torch.full_like(encoder.patch_embed.proj.bias, 0.5))


def test_a_vjepa20_file_is_refused_by_a_21_model_in_one_line(tmp_path):
    torch.manual_seed(0)
    vit20 = create_encoder("vit_tiny_rope", embed_dim=16, num_heads=1, depth=12, img_size=48, num_frames=4)
    path = tmp_path / "vjepa20.pt"
    torch.save({"target_encoder": {f"module.backbone.{k}": v for k, v in vit20.state_dict().items()}}, path)
    encoder = fixture_encoder("released")
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    with pytest.raises(CheckpointError) as error:
        load_encoder(encoder, path, allow_random_init=True, strict=False)
    message = str(error.value)
    assert "\n" not in message and "V-JEPA 2.0 encoder" in message and "'norm.weight'" in message
    assert "norms_block" in message and "vit_large_rope" in message
    assert all(torch.equal(v, before[k]) for k, v in encoder.state_dict().items())  # nothing half-loaded


@pytest.mark.parametrize("name", ["released", "variant"])
def test_a_vjepa21_file_is_refused_by_a_20_model_in_one_line(name):
    settings = OUTPUTS[name]["settings"]
    vit20 = create_encoder("vit_tiny_rope", embed_dim=settings["embed_dim"], num_heads=settings["num_heads"],
                           depth=12, patch_size=settings["patch_size"])  # fmt: skip
    with pytest.raises(CheckpointError) as error:
        load_encoder(vit20, FIXTURES / f"{name}.pt", allow_random_init=True, strict=False)
    message = str(error.value)
    assert "\n" not in message and "V-JEPA 2.1 encoder" in message and "'norms_block.*'" in message
    assert "vjepa2_1_vit_large_384" in message


@pytest.mark.parametrize(
    "name, options, expected",
    [
        ("released", {"modality_embedding": False}, "model.options.modality_embedding=true"),
        ("released", {"image_patch_embed": False}, "model.options.image_patch_embed=true"),
        ("variant", {"modality_embedding": True}, "has no img_mod_embed/video_mod_embed"),
        ("variant", {"image_patch_embed": True}, "model.options.image_patch_embed=false"),
    ],
)
def test_a_21_variant_the_model_was_not_built_as_is_named(name, options, expected):
    encoder = fixture_encoder(name, **options)
    with pytest.raises(CheckpointError, match=expected) as error:
        load_encoder(encoder, FIXTURES / f"{name}.pt")
    assert "\n" not in str(error.value)


def test_a_file_of_no_vjepa_layout_gets_the_strict_report(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"encoder": {"fc.weight": torch.zeros(2, 2)}}, path)
    with pytest.raises(CheckpointError, match="would stay randomly initialised") as error:
        load_encoder(fixture_encoder("variant"), path)
    assert "unexpected: fc.weight" in str(error.value)


def test_meta_device_build_equals_a_direct_build():
    settings = EncoderSettings(img_size=48, num_frames=4, depth=12, out_layers=(2, 11))
    size = {"embed_dim": 16, "num_heads": 1}
    torch.manual_seed(3)
    direct = FAMILY.create("vjepa2_1_vit_base_384", settings, {}, **size)
    torch.manual_seed(3)
    lazy = FAMILY.create("vjepa2_1_vit_base_384", settings, {}, "meta", **size)
    assert all(p.is_meta for p in lazy.parameters())
    materialize(lazy)
    assert direct.state_dict().keys() == lazy.state_dict().keys()
    assert all(torch.equal(v, lazy.state_dict()[k]) for k, v in direct.state_dict().items())


def test_blocks_made_one_at_a_time_with_pretrained_weights_equal_a_direct_load():
    """What FSDP2 / ZeRO-3 do: the stem materialised, the blocks filled where they live."""
    direct = loaded("released")
    lazy = FAMILY.create("vjepa2_1_vit_base_384", EncoderSettings(depth=12), {}, "meta", embed_dim=16, num_heads=1)
    deferred = materialize_stem(lazy)
    assert isinstance(deferred, DeferredBlocks) and all(p.is_meta for p in lazy.blocks.parameters())
    load_encoder(lazy, FIXTURES / "released.pt", deferred=deferred)
    lazy.blocks.to_empty(device="cpu")
    for index, block in enumerate(lazy.blocks):
        deferred.fill(lazy, index, block)
    assert all(torch.equal(v, lazy.state_dict()[k]) for k, v in direct.state_dict().items())


@pytest.mark.parametrize(
    "name, width, depth, heads, millions, levels",
    [
        ("vjepa2_1_vit_base_384", 768, 12, 12, 86.8, (2, 5, 8, 11)),
        ("vjepa2_1_vit_large_384", 1024, 24, 16, 304.7, (5, 11, 17, 23)),
        ("vjepa2_1_vit_giant_384", 1408, 40, 22, 1013.3, (9, 19, 29, 39)),
        ("vjepa2_1_vit_gigantic_384", 1664, 48, 26, 1845.2, (11, 23, 37, 47)),
    ],
)
def test_sizes_are_metas(name, width, depth, heads, millions, levels):
    encoder = FAMILY.create(name, EncoderSettings(img_size=384), {}, "meta")  # no memory
    assert (encoder.embed_dim, encoder.depth, encoder.num_heads) == (width, depth, heads)
    assert encoder.hierarchical_layers == levels and len(encoder.norms_block) == 4
    assert sum(p.numel() for p in encoder.parameters()) / 1e6 == pytest.approx(millions, abs=0.1)


@pytest.mark.parametrize("name", sorted(FAMILY.sizes))
def test_every_size_runs_both_paths_at_full_width(name):
    # on the meta device: the shapes of the whole forward, no memory, no compute
    encoder = FAMILY.create(name, EncoderSettings(img_size=384, out_layers=(5, 11)), {}, "meta", depth=12)
    width = 2 * encoder.embed_dim  # two levels along channels
    assert encoder(torch.empty(2, 3, 16, 384, 384, device="meta")).shape == (2, 8 * 24 * 24, width)
    assert encoder(torch.empty(2, 3, 1, 384, 384, device="meta")).shape == (2, 24 * 24, width)


def test_every_parameter_of_a_path_gets_a_gradient():
    # ViT-B's width, four blocks (the smallest depth with four levels), every level read
    torch.manual_seed(0)
    encoder = create_encoder("vjepa2_1_vit_base_384", depth=4, img_size=32, num_frames=4, out_layers=(0, 1, 2, 3))
    video_only = {"patch_embed.proj.weight", "patch_embed.proj.bias", "video_mod_embed"}
    image_only = {"patch_embed_img.proj.weight", "patch_embed_img.proj.bias", "img_mod_embed"}
    for frames, unused in ((4, image_only), (1, video_only)):
        encoder.zero_grad(set_to_none=True)
        encoder(torch.randn(1, 3, frames, 32, 32)).square().mean().backward()
        no_grad = {n for n, p in encoder.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0}
        assert no_grad == unused


def test_layer_ids_for_layer_decay():
    encoder = fixture_encoder("released")
    ids = {name: encoder.layer_id(name) for name, _ in encoder.named_parameters()}
    assert encoder.num_layers == 14
    for name in ("patch_embed.proj.weight", "patch_embed_img.proj.weight", "img_mod_embed", "video_mod_embed"):
        assert ids[name] == 0
    assert ids["blocks.0.attn.qkv.weight"] == 1 and ids["blocks.11.mlp.fc2.bias"] == 12
    # the norm of the level after block i sits with what follows block i; the output norm is last
    assert [ids[f"norms_block.{k}.weight"] for k in range(4)] == [4, 7, 10, 13]
    assert layer_decay_scale(encoder, "norms_block.3.bias", 0.5) == 1.0
    assert all(0 <= value < encoder.num_layers for value in ids.values())


def test_forward_flops_count_each_paths_tokens():
    encoder = fixture_encoder("released")
    common = {"img_size": 48, "patch_size": 16, "embed_dim": 16, "depth": 12, "mlp_ratio": 4.0}
    assert encoder.forward_flops(4, 48, 48) == encoder_forward_flops(frames=4, tubelet_size=2, **common)
    assert encoder.forward_flops(1, 48, 48) == encoder_forward_flops(frames=1, tubelet_size=1, **common)
    assert encoder.tubelet_size == 2
    variant = fixture_encoder("variant")
    assert variant.forward_flops(4, 42, 42) == encoder_forward_flops(
        frames=4, img_size=42, patch_size=14, tubelet_size=2, embed_dim=24, depth=12, mlp_ratio=2.0, use_silu=True
    )


def test_activation_checkpointing_keeps_outputs():
    encoder = loaded("released", out_layers=(2, 5, 8, 11))
    x = case_input("released", "video")
    with torch.no_grad():
        plain = encoder(x)
    apply_activation_checkpointing(encoder.blocks, 1)
    encoder.train()
    torch.testing.assert_close(encoder(x), plain, rtol=0, atol=0)


def test_what_meta_does_not_define_is_an_error():
    with pytest.raises(ValueError, match="not divisible"):  # no image path: a 1-frame clip is a video
        fixture_encoder("variant")(torch.randn(1, 3, 1, 42, 42))
    with pytest.raises(ValueError, match=r"normalised outputs at blocks \[2, 5, 8, 11\] only"):
        fixture_encoder("released", out_layers=(3,))
    with pytest.raises(ValueError, match="interpolate_rope is defined for patch sizes"):
        create_encoder("vjepa2_1_vit_base_384", patch_size=8, embed_dim=16, num_heads=1)
    with pytest.raises(ValueError, match="at least 2x2 patches"):
        fixture_encoder("released")(torch.randn(1, 3, 2, 16, 48))
    with pytest.raises(ValueError, match="depth 2 < 4"):
        hierarchical_layers(2)
    assert hierarchical_layers(8) == (1, 3, 5, 7) and hierarchical_layers(48) == (11, 23, 37, 47)
