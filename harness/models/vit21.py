"""V-JEPA 2.1's video ViT: RoPE only, an image path, modality embeddings, per-level norms.

What differs from V-JEPA 2.0's encoder (:mod:`harness.models.vit`), read from Meta's
``app/vjepa_2_1/models``:

* RoPE is the only position scheme (2.1 has no sin-cos table), with each rotated channel pair
  sharing one frequency (``repeat_interleave``; 2.0 repeats the frequency list instead, see
  :func:`harness.models.layers.rotate_half_pairs`), and optionally "interpolated": rows and
  columns are placed on the 16-patch grid of 256 px pretraining (18 for patch 14) whatever the
  input's size (``interpolate_rope``, on in every released 2.1 encoder);
* a second patch embedding ``patch_embed_img`` (tubelet 1) for 1-frame inputs (images), chosen by
  the input's frame count (Meta's ``img_temporal_dim_size=1``);
* learnt ``video_mod_embed`` / ``img_mod_embed`` ``[1, 1, D]`` added to every token after the
  patch embedding of its modality;
* no final ``norm``: four LayerNorms ``norms_block``, one per hierarchical level (blocks
  ``hierarchical_layers``), the last of which is the output norm; ``out_layers`` (a subset of
  the levels) returns the normalised tokens of those levels.

Parameter names are Meta's, so its checkpoints load as they are.
"""

from __future__ import annotations

import torch
from torch import nn

from harness.core.crop import CropSize, crop_hw
from harness.models.encoder import VideoEncoder
from harness.models.layers import Block, RotaryTable, init_linear_and_norms, init_vit_block
from harness.models.vit import PatchEmbed3D

#: Meta's four hierarchical levels per depth (``VisionTransformer.hierarchical_layers``)
HIERARCHICAL_LAYERS = {12: (2, 5, 8, 11), 24: (5, 11, 17, 23), 40: (9, 19, 29, 39), 48: (11, 23, 37, 47)}
#: the grid (patches per side) that interpolated RoPE positions span, per patch size: 256 px
#: pretraining with patch 16, 252 px with patch 14 (Meta defines no other)
ROPE_REFERENCE_GRID = {16: 16, 14: 18}


def hierarchical_layers(depth: int) -> tuple[int, ...]:
    """The four blocks whose outputs are the hierarchical levels: Meta's for its depths (12, 24,
    40, 48); for any other depth (small experiments; Meta's code has none) the last block of each
    quarter, ``depth * k // 4 - 1``, which is also Meta's rule for 12, 24 and 40."""
    if depth in HIERARCHICAL_LAYERS:
        return HIERARCHICAL_LAYERS[depth]
    if depth < 4:
        raise ValueError(f"a V-JEPA 2.1 encoder has four hierarchical levels: depth {depth} < 4")
    return tuple(depth * quarter // 4 - 1 for quarter in range(1, 5))


class VisionTransformer21(VideoEncoder):
    """V-JEPA 2.1 video ViT encoder returning ``[B, N, D]`` (the ``vjepa2.1`` model family).

    Args:
        img_size, num_frames: the configured input, ``img_size`` one side or ``(height, width)``
            (informational: RoPE is computed per input).
        patch_size, tubelet_size: spatial and temporal patch of the video path.
        embed_dim, depth, num_heads, mlp_ratio: transformer size.
        use_silu, wide_silu: SwiGLU MLP (Meta's option; its released encoders use GELU).
        interpolate_rope: place rows and columns on the pretraining grid (patch 16 or 14 only).
        modality_embedding: the learnt ``video_mod_embed`` / ``img_mod_embed``.
        image_patch_embed: the tubelet-1 ``patch_embed_img`` that 1-frame inputs go through
            (Meta's ``img_temporal_dim_size=1``); without it a 1-frame input is an error.
        use_sdpa, drop_path_rate, init_std: as :class:`harness.models.vit.VisionTransformer`.
        out_layers: hierarchical levels to return (blocks among :attr:`hierarchical_layers`),
            each through its own norm (:meth:`forward_levels` gives them as a list).
        level_concat: how :meth:`forward` joins several levels: ``channels`` (the default, as
            Meta's hierarchical output ``torch.cat(levels, dim=2)``: ``[B, N, L * D]``) or
            ``tokens`` (``[B, L * N, D]``, as V-JEPA 2.0's multi-level eval wrapper).

    Inputs ``[B, C, T, H, W]``: ``T == 1`` takes the image path when there is one; otherwise
    ``T`` must be a multiple of ``tubelet_size``.
    """

    family = "vjepa2.1"
    LEVEL_CONCAT = "channels"
    uses_every_parameter = False  # a video never reaches the image path, nor any input the unread levels' norms
    EMBEDDINGS = ("patch_embed", "img_mod_embed", "video_mod_embed")  # (patch_embed_img too)

    def __init__(
        self,
        img_size: CropSize = 384,
        num_frames: int = 16,
        patch_size: int = 16,
        tubelet_size: int = 2,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        use_silu: bool = False,
        wide_silu: bool = True,
        interpolate_rope: bool = True,
        modality_embedding: bool = True,
        image_patch_embed: bool = True,
        use_sdpa: bool = True,
        drop_path_rate: float = 0.0,
        init_std: float = 0.02,
        out_layers: list[int] | tuple[int, ...] | None = None,
        level_concat: str | None = None,
    ) -> None:
        super().__init__()
        self.hierarchical_layers = hierarchical_layers(depth)
        self.out_layers = self.checked_out_layers(out_layers, depth)
        self.level_concat = self.checked_level_concat(level_concat)
        if self.out_layers is not None and not set(self.out_layers) <= set(self.hierarchical_layers):
            raise ValueError(f"out_layers {list(self.out_layers)}: a V-JEPA 2.1 encoder of depth {depth} has "
                             f"normalised outputs at blocks {list(self.hierarchical_layers)} only")  # fmt: skip
        if interpolate_rope and patch_size not in ROPE_REFERENCE_GRID:
            raise ValueError(f"interpolate_rope is defined for patch sizes {sorted(ROPE_REFERENCE_GRID)}, "
                             f"not {patch_size} (set it false)")  # fmt: skip
        self.embed_dim, self.num_heads, self.depth = embed_dim, num_heads, depth
        self.patch_size, self.tubelet_size, self.init_std = patch_size, tubelet_size, init_std
        self.mlp_ratio, self.use_silu, self.wide_silu = mlp_ratio, use_silu, wide_silu
        height, width = crop_hw(img_size)
        self.grid_size = (num_frames // tubelet_size, height // patch_size, width // patch_size)
        self.patch_embed = PatchEmbed3D(patch_size, tubelet_size, in_chans, embed_dim)
        self.patch_embed_img = PatchEmbed3D(patch_size, 1, in_chans, embed_dim) if image_patch_embed else None
        self.modality_embedding = modality_embedding
        if modality_embedding:
            self.img_mod_embed = nn.Parameter(torch.zeros(1, 1, embed_dim))
            self.video_mod_embed = nn.Parameter(torch.zeros(1, 1, embed_dim))
        reference = ROPE_REFERENCE_GRID[patch_size] if interpolate_rope else None
        self.rope = RotaryTable(embed_dim // num_heads, interleaved=True, reference_grid=reference)
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, rate, use_sdpa, True, use_silu, wide_silu)
            for rate in rates
        )
        self.norms_block = nn.ModuleList(nn.LayerNorm(embed_dim, eps=1e-6) for _ in self.hierarchical_layers)
        self.init_weights()

    def init_stem(self) -> None:
        """Truncated-normal patch projections, unit level norms, modality embeddings ~ N(0, 1e-6)
        (Meta's initialisation)."""
        init_linear_and_norms(self, self.init_std, skip=self.blocks)
        if self.modality_embedding:
            nn.init.normal_(self.img_mod_embed, std=1e-6)
            nn.init.normal_(self.video_mod_embed, std=1e-6)

    def init_block(self, index: int, block: nn.Module) -> None:
        """As V-JEPA 2 (:func:`harness.models.layers.init_vit_block`)."""
        init_vit_block(block, index, self.init_std)

    def layer_id(self, name: str) -> int:
        """As :meth:`VideoEncoder.layer_id`, and the norm of the level after block ``i`` at ``i + 2``
        (what follows block ``i``), so the output norm is at ``depth + 1`` as the ``vit`` family's."""
        if name.startswith("norms_block."):
            return self.hierarchical_layers[int(name.split(".")[1])] + 2
        return super().layer_id(name)

    def level_norm(self, index: int) -> nn.Module:
        """The norm of the hierarchical level after block ``index`` (only those blocks have one)."""
        if index not in self.hierarchical_layers:
            raise ValueError(f"level {index}: a V-JEPA 2.1 encoder of depth {self.depth} has normalised outputs "
                             f"at blocks {list(self.hierarchical_layers)} only")  # fmt: skip
        return self.norms_block[self.hierarchical_layers.index(index)]

    def tubelet_for(self, frames: int) -> int:
        """1 for a 1-frame clip when it takes the image path (FLOPs count its tokens), else the tubelet."""
        return 1 if frames == 1 and self.patch_embed_img is not None else self.tubelet_size

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        """Tokens ``[B, N, D]`` of the input's modality (with its modality embedding) and their grid."""
        image = x.shape[2] == 1 and self.patch_embed_img is not None
        patch_embed = self.patch_embed_img if image else self.patch_embed
        grid = patch_embed.grid(x.shape)
        tokens = patch_embed(x)
        if self.modality_embedding:
            tokens = tokens + (self.img_mod_embed if image else self.video_mod_embed).to(tokens.dtype)
        return tokens, grid

    def forward_levels(self, x: torch.Tensor, levels: tuple[int, ...] | None = None) -> list[torch.Tensor]:
        """``[B, C, T, H, W]`` -> the normalised tokens ``[B, N, D]`` after each block of ``levels``
        (default: :attr:`out_layers`, else the output only), each through its level's norm."""
        levels = levels if levels is not None else (self.out_layers or self.hierarchical_layers[-1:])
        if not set(levels) <= set(self.hierarchical_layers):
            raise ValueError(
                f"levels {list(levels)}: normalised outputs exist at blocks {list(self.hierarchical_layers)}"
            )
        tokens, grid = self.embed(x)
        rope = self.rope(grid, x.device)
        outputs = []
        for index, block in enumerate(self.blocks):
            tokens = block(tokens, rope)
            if index in levels:
                outputs.append(self.level_norm(index)(tokens))
        return outputs

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, T, H, W]`` -> normalised tokens ``[B, N, D]`` (with ``L`` out_layers
        ``[B, N, L * D]``, or ``[B, L * N, D]`` joined along tokens: :meth:`join_levels`)."""
        return self.join_levels(self.forward_levels(x))

    forward = forward_features
