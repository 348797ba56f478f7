"""VisionTransformer for video: 3D tubelet patch embedding, 3D sin-cos or RoPE positions.

Single-device module; activation checkpointing, compile and sharding are applied from outside
(``harness.parallel``). Parameter names follow V-JEPA 2 so its checkpoints load directly.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.core.crop import CropSize, crop_hw
from harness.models import areas
from harness.models.encoder import VideoEncoder
from harness.models.flops import attention_flops, clip_grid
from harness.models.layers import Block, RotaryTable, init_linear_and_norms, init_vit_block

log = logging.getLogger(__name__)


def sincos_1d(dim: int, positions: np.ndarray) -> np.ndarray:
    """``[len(positions), dim]`` table: ``sin(p * w_k)`` then ``cos(p * w_k)``, ``w_k = 10000^(-2k/dim)``."""
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    angles = positions.reshape(-1)[:, None] * omega[None, :]
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def sincos_3d(dim: int, grid: tuple[int, int, int], uniform_power: bool = False) -> torch.Tensor:
    """Fixed 3D position table ``[t*h*w, dim]`` (depth-major order), as V-JEPA 2 builds it, for any
    ``(t, h, w)`` grid (rows and columns need not be as many).

    Channels: depth ``dim/2``, height ``dim/4``, width ``dim/4``; or with ``uniform_power``
    ``2 * ceil(dim / 6)`` each, truncated to ``dim``.
    """
    t, h, w = grid
    depth, height, width = np.meshgrid(np.arange(t), np.arange(h), np.arange(w), indexing="ij")
    return torch.from_numpy(sincos_at(dim, depth, height, width, uniform_power)).float()


def sincos_rows(dim: int, grid: tuple[int, int, int], rows: np.ndarray, uniform_power: bool = False) -> torch.Tensor:
    """Rows ``rows`` of :func:`sincos_3d` ``(dim, grid)`` without building the rest (to recognise
    which grid a saved table was made for at the cost of a few rows)."""
    _, h, w = grid
    rows = np.asarray(rows)
    return torch.from_numpy(sincos_at(dim, rows // (h * w), rows // w % h, rows % w, uniform_power)).float()


def sincos_at(dim: int, depth: np.ndarray, height: np.ndarray, width: np.ndarray, uniform_power: bool) -> np.ndarray:
    """``float64 [n, dim]``: the sin-cos rows of the positions ``(depth, height, width)`` (arrays of
    one shape, flattened in order), the channel split of :func:`sincos_3d`."""
    if uniform_power:
        d_dim = h_dim = w_dim = int(math.ceil(dim / 6) * 2)
    else:
        d_dim, h_dim, w_dim = dim // 2, dim // 4, dim // 4
    return np.concatenate(
        [
            sincos_1d(d_dim, depth.astype(np.float64)),
            sincos_1d(h_dim, height.astype(np.float64)),
            sincos_1d(w_dim, width.astype(np.float64)),
        ],
        axis=1,
    )[:, :dim]


def interpolate_position_table(
    table: torch.Tensor, old_grid: tuple[int, int, int], new_grid: tuple[int, int, int]
) -> torch.Tensor:
    """Resize a ``[1, t*h*w, D]`` position table from ``old_grid`` to ``new_grid`` as V-JEPA 2's
    ``VisionTransformer.interpolate_pos_encoding`` does: fewer time steps at the same frame size
    keep the first ``new_t`` steps of the table (its "chop off" branch: the positions the clip
    really has, not a stretched table); any other change is trilinear (``align_corners=False``).
    It passes ``scale_factor=new/old`` and this ``size=new_grid``: both sample at ``old/new``
    steps (bit-equal on the grids tests/models/test_vit.py checks), and a size cannot round short."""
    if new_grid[1:] == old_grid[1:] and new_grid[0] < old_grid[0]:
        return table[:, : math.prod(new_grid)]
    volume = table.reshape(1, *old_grid, -1).permute(0, 4, 1, 2, 3).float()
    volume = F.interpolate(volume, size=new_grid, mode="trilinear", align_corners=False)
    return volume.permute(0, 2, 3, 4, 1).reshape(1, -1, table.shape[-1]).to(table.dtype)


class PatchEmbed3D(nn.Module):
    """``[B, C, T, H, W]`` -> ``[B, T/tubelet * H/patch * W/patch, D]`` with one Conv3d (any ``H``
    and ``W`` that patches tile, square or not)."""

    def __init__(self, patch_size: int = 16, tubelet_size: int = 2, in_chans: int = 3, embed_dim: int = 768) -> None:
        super().__init__()
        self.patch_size, self.tubelet_size = patch_size, tubelet_size
        kernel = (tubelet_size, patch_size, patch_size)
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=kernel, stride=kernel)

    def grid(self, shape: torch.Size) -> tuple[int, int, int]:
        """Token grid ``(t, h, w)`` for an input of shape ``[B, C, T, H, W]``."""
        _, _, frames, height, width = shape
        if frames % self.tubelet_size or height % self.patch_size or width % self.patch_size:
            raise ValueError(
                f"input {tuple(shape[2:])} (T, H, W) is not divisible by tubelet {self.tubelet_size} "
                f"and patch {self.patch_size}"
            )
        return frames // self.tubelet_size, height // self.patch_size, width // self.patch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class VisionTransformer(VideoEncoder):
    """Video ViT encoder returning the token sequence ``[B, N, D]`` (the ``vit`` model family).

    Args:
        img_size: configured input size in pixels, one side (square) or ``(height, width)``
            (sizes the sin-cos table: ``height / patch`` rows of ``width / patch`` columns).
        num_frames: configured frames per clip.
        patch_size, tubelet_size: spatial and temporal patch size.
        embed_dim, depth, num_heads, mlp_ratio: transformer size.
        use_rope: rotary positions on queries/keys instead of the additive sin-cos table.
        uniform_power: sin-cos channel split (see :func:`sincos_3d`).
        use_silu, wide_silu: SwiGLU MLP instead of GELU (``wide_silu``: 2/3 width, V-JEPA 2 rounding).
        use_sdpa: fused attention; ``False`` uses the numerically equal math path.
        drop_path_rate: stochastic depth, increasing linearly over depth to this rate.
        out_layers: multi-level features (V-JEPA 2's ``wrapper_kwargs.out_layers``): the output
            is the final norm applied to the tokens after each of these blocks (0-based),
            concatenated along the token axis: ``[B, len(out_layers) * N, D]``.
        level_concat: ``tokens`` (that, the default) or ``channels`` (``[B, N, len(out_layers) * D]``).
        use_area_attention, area_attention_layers, area_spatial_splits, area_temporal_splits,
            area_residual_scale: V-JEPA 2's spatiotemporal area attention, with its names and
            defaults (:mod:`harness.models.areas`): the blocks ``[start, end)`` of
            ``area_attention_layers`` (default ``[0, int(0.75 depth)]``) attend within areas of
            the token grid. RoPE only (V-JEPA 2 builds it in RoPE blocks alone); the ``area_*``
            values are refused without it, as they would change nothing.

    It keeps the encoder contract of :mod:`harness.models.family` (``blocks``, ``layer_id``,
    ``forward_flops``, ``init_weights``).

    Inputs whose frame count or resolution differ from the configured ones work: the sin-cos
    table is resized as V-JEPA 2 does (logged once per new grid) and RoPE is computed for the actual grid.
    """

    family = "vit"
    EMBEDDINGS = ("patch_embed", "pos_embed", "rope")

    def __init__(
        self,
        img_size: CropSize = 224,
        num_frames: int = 16,
        patch_size: int = 16,
        tubelet_size: int = 2,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        use_rope: bool = False,
        uniform_power: bool = False,
        use_silu: bool = False,
        wide_silu: bool = True,
        use_sdpa: bool = True,
        drop_path_rate: float = 0.0,
        init_std: float = 0.02,
        out_layers: list[int] | tuple[int, ...] | None = None,
        level_concat: str | None = None,
        use_area_attention: bool = False,
        area_attention_layers: list[int] | tuple[int, ...] | None = None,
        area_spatial_splits: int = areas.DEFAULT_SPLITS,
        area_temporal_splits: int = areas.DEFAULT_SPLITS,
        area_residual_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.out_layers = self.checked_out_layers(out_layers, depth)
        self.level_concat = self.checked_level_concat(level_concat)
        self.area_splits = (area_spatial_splits, area_temporal_splits)
        self.area_blocks = areas.checked_area_blocks(depth, use_rope, use_area_attention, area_attention_layers,
                                                     self.area_splits, area_residual_scale)  # fmt: skip
        self.embed_dim, self.num_heads, self.depth = embed_dim, num_heads, depth
        self.patch_size, self.tubelet_size = patch_size, tubelet_size
        self.use_rope, self.uniform_power, self.init_std = use_rope, uniform_power, init_std
        self.mlp_ratio, self.use_silu, self.wide_silu = mlp_ratio, use_silu, wide_silu
        self.patch_embed = PatchEmbed3D(patch_size, tubelet_size, in_chans, embed_dim)
        height, width = crop_hw(img_size)
        self.grid_size = (num_frames // tubelet_size, height // patch_size, width // patch_size)
        if self.area_blocks:  # the configured input, refused here rather than at the first forward
            areas.checked_grouping(self.grid_size, *self.area_splits)
        if use_rope:
            self.rope = RotaryTable(embed_dim // num_heads)
        else:
            # A buffer, not a Parameter: fixed, never optimised, but saved under V-JEPA 2's key.
            self.register_buffer("pos_embed", sincos_3d(embed_dim, self.grid_size, uniform_power)[None])
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, rate, use_sdpa, use_rope, use_silu, wide_silu,
                  area_attention=index in self.area_blocks, area_residual_scale=float(area_residual_scale))
            for index, rate in enumerate(rates)
        )  # fmt: skip
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self._logged_grids: set[tuple[int, int, int]] = set()
        self.init_weights()

    def init_stem(self) -> None:
        """Truncated-normal patch projection, unit final norm, the sin-cos table recomputed."""
        init_linear_and_norms(self, self.init_std, skip=self.blocks)
        if not self.use_rope:
            self.pos_embed.copy_(sincos_3d(self.embed_dim, self.grid_size, self.uniform_power)[None])

    def init_block(self, index: int, block: nn.Module) -> None:
        """Truncated-normal linear weights, unit norms, and the residual outputs of block ``index``
        divided by ``sqrt(2 (index + 1))`` (V-JEPA 2's depth rescaling)."""
        init_vit_block(block, index, self.init_std)

    def position_table(self, grid: tuple[int, int, int]) -> torch.Tensor:
        """The sin-cos table ``[1, N, D]`` for ``grid``, resized if it differs
        (:func:`interpolate_position_table`)."""
        if grid == self.grid_size:
            return self.pos_embed
        if grid not in self._logged_grids:
            self._logged_grids.add(grid)
            log.info("interpolating the sin-cos position table from grid %s to %s", self.grid_size, grid)
        return interpolate_position_table(self.pos_embed, self.grid_size, grid)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, T, H, W]`` -> normalised tokens ``[B, N, D]`` (``[B, L * N, D]`` with
        ``L`` out_layers)."""
        grid = self.patch_embed.grid(x.shape)
        tokens = self.patch_embed(x)
        rope = None
        if self.use_rope:
            rope = self.rope(grid, x.device)
        else:
            tokens = tokens + self.position_table(grid).to(tokens.dtype)
        layout = areas.area_layout(grid, *self.area_splits, x.device) if self.area_blocks else None
        return self.run_blocks(tokens, rope, layout)

    forward = forward_features

    def forward_flops(self, frames: int, height: int, width: int) -> int:
        """As :meth:`VideoEncoder.forward_flops`, each area block's scores and weighted sum counted
        over the chunks it computes (:func:`harness.models.flops.attention_flops`)."""
        flops = super().forward_flops(frames, height, width)
        if not self.area_blocks:
            return flops
        grid = clip_grid(frames, (height, width), self.patch_size, self.tubelet_for(frames))
        saved = attention_flops(grid, self.embed_dim) - attention_flops(grid, self.embed_dim, self.area_splits)
        return flops - len(self.area_blocks) * saved
