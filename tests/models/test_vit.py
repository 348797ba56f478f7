import copy

import pytest
import torch
import vjepa2.models.vision_transformer as vjepa2_vit  # test extra cc-vjepa2: V-JEPA 2's own modules

from harness.models import AttentiveClassifier, VideoClassifier, create_encoder, encoder_names, family_of
from harness.models.flops import encoder_forward_flops
from harness.models.registry import encoder_kwargs
from harness.models.vit_family import SIZES as ENCODER_SIZES
from harness.parallel.activation_checkpoint import apply_activation_checkpointing

TINY = {"img_size": 32, "num_frames": 4, "patch_size": 16, "tubelet_size": 2}


def tiny_encoder(name="vit_tiny", **overrides):
    torch.manual_seed(0)
    return create_encoder(name, **{**TINY, **overrides})


def set_sdpa(model, enabled):
    for module in model.modules():
        if hasattr(module, "use_sdpa"):
            module.use_sdpa = enabled


@pytest.mark.parametrize("name", [name for name in encoder_names() if family_of(name).name != "vjepa2.1"])
def test_every_size_forward_backward(name):
    # Full width and heads of each size, two blocks deep, at a tiny input. (V-JEPA 2.1's encoders
    # have parameters a video never uses and need four blocks: tests/models/test_vjepa21.py.)
    encoder = tiny_encoder(name, depth=2)
    head = AttentiveClassifier(encoder.embed_dim, num_classes=5, num_heads=encoder.num_heads)
    model = VideoClassifier(encoder, head)
    clips = torch.randn(2, 2, 3, 4, 32, 32)
    logits = model(clips)
    assert logits.shape == (2, 5) and logits.dtype == torch.float32
    logits.sum().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == [], f"parameters without gradient: {no_grad}"


@pytest.mark.parametrize(
    "name, millions",
    [("vit_large", 304), ("vit_huge", 632), ("vit_giant", 1012), ("vit_giant_xformers_rope", 1012)],
)
def test_published_parameter_counts(name, millions):
    with torch.device("meta"):
        encoder = create_encoder(name, img_size=224, num_frames=16)
    count = sum(p.numel() for p in encoder.parameters())
    assert count / 1e6 == pytest.approx(millions, rel=0.005)


def test_unknown_name_suggests():
    with pytest.raises(KeyError, match="did you mean 'vit_large'"):
        encoder_kwargs("vit_lage")
    assert ENCODER_SIZES["vit_giant"]["num_heads"] == 16


def test_token_count_and_shape_errors():
    encoder = tiny_encoder()
    assert encoder(torch.randn(1, 3, 4, 32, 32)).shape == (1, 2 * 2 * 2, 192)
    with pytest.raises(ValueError, match="not divisible"):
        encoder(torch.randn(1, 3, 3, 32, 32))


@pytest.mark.parametrize("name", ["vit_tiny", "vit_tiny_rope"])
@pytest.mark.parametrize("mlp", [{}, {"use_silu": True}, {"use_silu": True, "wide_silu": False}])
def test_sdpa_equals_math_path(name, mlp):
    encoder = tiny_encoder(name, **mlp).double()
    x = torch.randn(2, 3, 4, 32, 32, dtype=torch.float64)
    fused = encoder(x)
    set_sdpa(encoder, False)
    torch.testing.assert_close(encoder(x), fused, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["vit_tiny", "vit_tiny_rope"])
@pytest.mark.parametrize("every", [1, 2])
def test_activation_checkpointing_keeps_outputs_and_grads(name, every):
    encoder = tiny_encoder(name, drop_path_rate=0.0)
    wrapped = copy.deepcopy(encoder)
    assert apply_activation_checkpointing(wrapped.blocks, every) == len(range(0, 12, every))
    assert list(wrapped.state_dict()) == list(encoder.state_dict())
    x = torch.randn(2, 3, 4, 32, 32)
    out_a, out_b = encoder(x), wrapped(x)
    torch.testing.assert_close(out_a, out_b)
    out_a.square().sum().backward()
    out_b.square().sum().backward()
    for (name_a, p_a), (_, p_b) in zip(encoder.named_parameters(), wrapped.named_parameters()):
        torch.testing.assert_close(p_a.grad, p_b.grad, msg=name_a)


@pytest.mark.parametrize("name", ["vit_tiny", "vit_tiny_rope"])
def test_other_frame_count_and_resolution(name, caplog):
    encoder = tiny_encoder(name)
    with caplog.at_level("INFO"):
        out = encoder(torch.randn(1, 3, 8, 48, 64))
        encoder(torch.randn(1, 3, 8, 48, 64))
    assert out.shape == (1, 4 * 3 * 4, 192)
    messages = [r.getMessage() for r in caplog.records if "interpolating" in r.getMessage()]
    assert len(messages) == (0 if "rope" in name else 1), "interpolation is logged once per grid"


def vjepa2_resized_table(table, img_size, num_frames, frames, size):
    """What V-JEPA 2's own ``VisionTransformer.interpolate_pos_encoding`` makes of ``table`` (the
    sin-cos table of a model built for ``num_frames`` x ``img_size``, patch 16, tubelet 2) for
    clips of ``frames`` x ``size`` pixels: the reference for every resized table of ours."""
    theirs = vjepa2_vit.VisionTransformer(img_size=img_size, num_frames=num_frames, patch_size=16, tubelet_size=2,
                                          embed_dim=table.shape[-1], depth=1, num_heads=3)  # fmt: skip
    theirs.pos_embed.data.copy_(table)
    return theirs.interpolate_pos_encoding(torch.zeros(1, 3, frames, size, size), theirs.pos_embed)


# (frames, pixels) of the clips against the configured 4 x 32 (grid (2, 2, 2)): more frames, a
# larger and a smaller frame, both, and fewer frames at the same size (V-JEPA 2 then keeps the
# first time steps of the table instead of interpolating) or at another size (interpolated).
OTHER_CLIPS = [(8, 32), (4, 64), (4, 16), (8, 48), (2, 32), (2, 48)]


@pytest.mark.parametrize("frames,size", OTHER_CLIPS, ids=[f"{f}x{s}" for f, s in OTHER_CLIPS])
def test_position_table_for_another_grid_is_vjepa2s(frames, size):
    encoder = tiny_encoder()
    assert encoder.position_table(encoder.grid_size) is encoder.pos_embed, "the configured grid is the table"
    ours = encoder.position_table((frames // 2, size // 16, size // 16))
    expected = vjepa2_resized_table(encoder.pos_embed, 32, 4, frames, size)
    assert ours.shape == expected.shape
    # Bit-equal, not close: the same trilinear sampling (V-JEPA 2 passes scale_factor=new/old,
    # we pass the size; both sample at old/new steps) or the same slice.
    assert torch.equal(ours, expected), (ours - expected).abs().max()


def test_positions_matter():
    for name in ("vit_tiny", "vit_tiny_rope"):
        encoder = tiny_encoder(name)
        x = torch.randn(1, 3, 4, 32, 32)
        swapped = x.flip(2)  # reverse time: same tokens, other positions
        assert not torch.allclose(encoder(x).mean(1), encoder(swapped).mean(1), atol=1e-4), name


def test_clip_fusion_averages_logits():
    encoder = tiny_encoder()
    model = VideoClassifier(encoder, AttentiveClassifier(192, 4, num_heads=3)).eval()
    clips = torch.randn(2, 3, 3, 4, 32, 32)
    per_clip = torch.stack([model(clips[:, i]) for i in range(3)], dim=1)
    torch.testing.assert_close(model(clips), per_clip.mean(1))


def test_logits_in_fp32_under_bf16_autocast():
    model = VideoClassifier(tiny_encoder(), AttentiveClassifier(192, 4, num_heads=3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        tokens = model.encoder(torch.randn(1, 3, 4, 32, 32))
        logits = model(torch.randn(1, 3, 4, 32, 32))
    assert tokens.dtype == torch.bfloat16, "the encoder really computes in bf16 on CPU"
    assert logits.dtype == torch.float32


def test_frozen_encoder_gets_no_gradient():
    model = VideoClassifier(tiny_encoder(), AttentiveClassifier(192, 4, num_heads=3), freeze_encoder=True)
    model(torch.randn(2, 3, 4, 32, 32)).sum().backward()
    assert all(p.grad is None and not p.requires_grad for p in model.encoder.parameters())
    assert all(p.grad is not None for p in model.classifier.parameters())


def test_frozen_encoder_under_inference_mode_equals_no_grad_and_trains_the_head():
    model = VideoClassifier(tiny_encoder(), AttentiveClassifier(192, 4, num_heads=3), freeze_encoder=True)
    clips = torch.randn(2, 3, 4, 32, 32)
    model.frozen_inference_mode = False
    before = model(clips)
    model.frozen_inference_mode = True
    after = model(clips)
    assert torch.equal(before, after) and not after.is_inference()
    after.sum().backward()  # the head saved the (cloned) tokens for its backward
    assert all(p.grad is not None for p in model.classifier.parameters())


@pytest.mark.slow
def test_compiled_frozen_blocks_under_inference_mode_train_the_head_like_eager():
    eager = VideoClassifier(tiny_encoder(), AttentiveClassifier(192, 4, num_heads=3), freeze_encoder=True)
    eager.frozen_inference_mode = True
    compiled = copy.deepcopy(eager)
    for block in compiled.encoder.blocks:
        block.compile()  # what model.compile_model does
    clips = torch.randn(2, 3, 4, 32, 32)
    for model in (eager, compiled):
        model(clips).sum().backward()
    torch.testing.assert_close(compiled(clips), eager(clips), rtol=1e-4, atol=1e-5)
    for a, b in zip(eager.classifier.parameters(), compiled.classifier.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5)


def test_pooler_orders_share_parameter_names():
    a = AttentiveClassifier(192, 4, num_heads=3, depth=3)
    b = AttentiveClassifier(192, 4, num_heads=3, depth=3, order="queries")
    b.load_state_dict(a.state_dict())
    tokens = torch.randn(2, 10, 192)
    assert not torch.allclose(a(tokens), b(tokens))
    assert {k.split(".")[1] for k in a.state_dict() if k.startswith("pooler.")} == {
        "query_tokens",
        "cross_attention_block",
        "blocks",
    }


def test_flops_formula_matches_a_hand_count():
    # vit_tiny at 16x224: N = 8 * 14 * 14 = 1568 tokens.
    n, d = 1568, 192
    block = 2 * n * d * 3 * d + 4 * n * n * d + 2 * n * d * d + 2 * n * d * 4 * d * 2
    expected = 12 * block + 2 * n * 3 * 2 * 16 * 16 * d
    assert encoder_forward_flops(16, 224, 16, 2, d, 12) == expected
