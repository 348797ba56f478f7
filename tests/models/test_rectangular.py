"""Rectangular clips (``data.crop_size: [H, W]``) through every family's encoder: the token grid is
``H / patch`` rows of ``W / patch`` columns, the positions (sin-cos table, RoPE) follow rows and
columns, and FLOPs count ``H * W`` pixels."""

import math

import numpy as np
import pytest
import torch

from harness.core.crop import crop_hw, crop_text, parse_crop
from harness.models import AttentiveClassifier, VideoClassifier, create_encoder
from harness.models.attention_maps import forward_with_attention
from harness.models.flops import clip_grid, clip_tokens, encoder_forward_flops
from harness.models.layers import RotaryTable
from harness.models.vit import sincos_3d, sincos_rows

GRID = (2, 3, 5)  # time steps, rows, columns: rows != columns, so a swap of the two shows


def sincos_by_hand(dim, grid, uniform_power):
    """V-JEPA 2's table as separable 1-D tables, one loop per token in (time, row, column) order:
    each of depth, height and width gets its own channels, ``sin(p w_k)`` then ``cos(p w_k)``."""
    parts = [int(math.ceil(dim / 6) * 2)] * 3 if uniform_power else [dim // 2, dim // 4, dim // 4]
    t, h, w = grid
    rows = []
    for depth in range(t):
        for row in range(h):
            for column in range(w):
                values = []
                for part, position in zip(parts, (depth, row, column)):
                    omegas = [1.0 / 10000 ** (k / (part / 2.0)) for k in range(part // 2)]
                    values += [math.sin(position * o) for o in omegas] + [math.cos(position * o) for o in omegas]
                rows.append(values[:dim])
    return torch.tensor(rows, dtype=torch.float32)


@pytest.mark.parametrize("uniform_power", [False, True])
def test_sincos_table_of_a_rectangular_grid_is_built_from_rows_and_columns(uniform_power):
    table = sincos_3d(48, GRID, uniform_power)
    assert table.shape == (2 * 3 * 5, 48)
    torch.testing.assert_close(table, sincos_by_hand(48, GRID, uniform_power), rtol=0, atol=1e-6)
    swapped = sincos_3d(48, (2, 5, 3), uniform_power)
    assert not torch.allclose(table, swapped, atol=1e-3), "3 rows of 5 columns are not 5 rows of 3"
    rows = np.array([0, 4, 5, 14, 15, 29])
    assert torch.equal(sincos_rows(48, GRID, rows, uniform_power), table[torch.from_numpy(rows)])


def assert_rope_positions(tables, expected):
    """Each axis's (cos, sin) table rotates its first channel pair by the token's position on that
    axis (the first frequency is 1 rad per step)."""
    for (cos, sin), positions in zip(tables, expected):
        torch.testing.assert_close(cos[:, 0], positions.float().cos())
        torch.testing.assert_close(sin[:, 0], positions.float().sin())


def test_rope_positions_of_a_rectangular_grid_follow_rows_then_columns():
    tokens = torch.arange(30)
    depth, rows, columns = tokens // 15, tokens // 5 % 3, tokens % 5
    assert_rope_positions(RotaryTable(head_dim=24)(GRID, torch.device("cpu")), (depth, rows, columns))
    with pytest.raises(AssertionError):
        assert_rope_positions(RotaryTable(head_dim=24)((2, 5, 3), torch.device("cpu")), (depth, rows, columns))
    # V-JEPA 2.1's interpolated RoPE: rows and columns each span the reference grid 0 .. G - 1
    stretched = RotaryTable(head_dim=24, interleaved=True, reference_grid=3)(GRID, torch.device("cpu"))
    assert_rope_positions(stretched, (depth, rows, columns * 2 / 4))


# one small encoder per family (and both position schemes of the vit family)
FAMILIES = {
    "vit_tiny": {"depth": 2},
    "vit_tiny_rope": {"depth": 2},
    "vjepa2_1_vit_base_384": {"depth": 4, "embed_dim": 48, "num_heads": 3},
    "videomae_small": {"depth": 2, "embed_dim": 48, "num_heads": 3},
}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_encoder_takes_rectangular_clips_as_rows_of_columns(name):
    torch.manual_seed(0)
    encoder = create_encoder(name, img_size=(32, 80), num_frames=4, patch_size=16, tubelet_size=2, **FAMILIES[name])
    assert encoder.grid_size == (2, 2, 5)
    tokens = encoder(torch.randn(2, 3, 4, 32, 80))
    assert tokens.shape[:2] == (2, 2 * (32 // 16) * (80 // 16)), "T/tubelet x H/patch x W/patch tokens"
    if hasattr(encoder, "pos_embed") and name.startswith("vit"):
        assert torch.equal(encoder.pos_embed[0], sincos_3d(encoder.embed_dim, (2, 2, 5))), "built for the grid"
    # the transposed clip is another grid: as many tokens, other positions
    transposed = encoder(torch.randn(2, 3, 4, 80, 32))
    assert transposed.shape == tokens.shape
    assert encoder.forward_flops(4, 32, 80) == encoder.forward_flops(4, 80, 32) > 0


def test_a_square_size_builds_what_it_always_built():
    torch.manual_seed(0)
    square = create_encoder("vit_tiny", img_size=32, num_frames=4, depth=1)
    torch.manual_seed(0)
    pair = create_encoder("vit_tiny", img_size=(32, 32), num_frames=4, depth=1)
    assert square.grid_size == pair.grid_size == (2, 2, 2)
    assert all(torch.equal(a, b) for a, b in zip(square.state_dict().values(), pair.state_dict().values()))


def test_flops_count_height_times_width():
    common = {"patch_size": 16, "tubelet_size": 2, "embed_dim": 192, "depth": 2}
    assert clip_grid(8, (16, 32), 16, 2) == (4, 1, 2) and clip_tokens(8, (16, 32), 16, 2) == 8
    # [16, 64] holds the tokens of a 32 x 32 square (1 x 4 = 2 x 2 patches per frame): the same FLOPs
    assert clip_tokens(8, (16, 64), 16, 2) == clip_tokens(8, 32, 16, 2) == 16
    assert encoder_forward_flops(frames=8, img_size=(16, 64), **common) == encoder_forward_flops(
        frames=8, img_size=32, **common
    )
    # and twice a 16 x 16 square's patch embedding and MLPs: linear terms scale with H * W
    tokens = clip_tokens(8, (16, 32), 16, 2)
    patch = 2 * tokens * 3 * 2 * 16**2 * 192
    block = 2 * tokens * 192 * 3 * 192 + 4 * tokens**2 * 192 + 2 * tokens * 192**2 + 2 * tokens * 192 * 768 * 2
    assert encoder_forward_flops(frames=8, img_size=(16, 32), **common) == patch + 2 * block
    encoder = create_encoder("vit_tiny", img_size=(16, 32), num_frames=8, depth=2)
    assert encoder.forward_flops(8, 16, 32) == patch + 2 * block


def test_probe_attention_folds_onto_the_rectangular_grid():
    torch.manual_seed(0)
    encoder = create_encoder("vit_tiny_rope", img_size=(32, 48), num_frames=4, patch_size=16, depth=1)
    model = VideoClassifier(encoder, AttentiveClassifier(192, 3, num_heads=3)).eval()
    with torch.no_grad():
        logits, maps = forward_with_attention(model, torch.randn(2, 1, 3, 4, 32, 48))
    assert logits.shape == (2, 3)
    assert maps.weights.shape == (2, 1, 1, 2, 2, 3), "[B, clips, views, T', H', W']: 2 rows of 3 columns"
    assert torch.allclose(maps.weights.sum(dim=(3, 4, 5)), torch.ones(2, 1, 1))


def test_crop_sizes_read_as_height_and_width():
    assert crop_hw(224) == (224, 224) and crop_hw([224, 320]) == (224, 320) and crop_hw((16, 32)) == (16, 32)
    assert crop_text(224) == "224" and crop_text([224, 320]) == "224x320" and crop_text([64, 64]) == "64"
    assert parse_crop("224") == 224 and parse_crop("224x320") == [224, 320] and parse_crop("224,320") == [224, 320]
    for bad in (True, [224], [1, 2, 3], "224", "22"):
        with pytest.raises(ValueError):
            crop_hw(bad)
    for bad in ("0", "224x", "ax3", "1x2x3", "-16x32"):
        with pytest.raises(ValueError, match="neither one side"):
            parse_crop(bad)
