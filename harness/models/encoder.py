"""What every family's video encoder shares: the parts of the encoder contract
(:mod:`harness.models.family`) that do not depend on the family's layers.

A subclass sets ``depth``, ``embed_dim``, ``mlp_ratio``, ``patch_size``, ``tubelet_size``,
``blocks`` (an ``nn.ModuleList``), ``norm``, ``out_layers`` (via :meth:`checked_out_layers`) and
``level_concat`` (via :meth:`checked_level_concat`),
and implements ``init_stem`` / ``init_block``.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from harness.models.family import init_all_units
from harness.models.flops import encoder_forward_flops

#: ways to join several levels' tokens (``model.level_concat``)
LEVEL_CONCATS = ("tokens", "channels")


class VideoEncoder(nn.Module):
    """Layer ids for layer decay, analytic FLOPs, seeded initialisation and the block loop with
    multi-level features, for any encoder of ``blocks`` between an embedding stem and ``norm``."""

    #: parameter-name prefixes of the embeddings (layer id 0)
    EMBEDDINGS: tuple[str, ...] = ("patch_embed", "pos_embed")
    #: False when one forward can leave trained parameters without a gradient (V-JEPA 2.1: the
    #: other modality's patch embedding, the levels not read): DDP then looks for unused ones
    uses_every_parameter: bool = True
    #: how several ``out_layers`` levels are joined when the config says ``auto``: along the token
    #: axis (V-JEPA 2's multi-level eval wrapper) or along channels (V-JEPA 2.1's hierarchical output)
    LEVEL_CONCAT: str = "tokens"
    level_concat: str = "tokens"
    #: MLP kind for the FLOPs count (a family with SwiGLU sets these per instance)
    use_silu: bool = False
    wide_silu: bool = True

    @staticmethod
    def checked_out_layers(out_layers, depth: int) -> tuple[int, ...] | None:
        """``out_layers`` as a tuple (None when empty), each in ``[0, depth)``."""
        if out_layers is not None and any(not 0 <= layer < depth for layer in out_layers):
            raise ValueError(f"out_layers {list(out_layers)} must lie in [0, {depth}) for a {depth}-block encoder")
        return tuple(out_layers) if out_layers else None

    def checked_level_concat(self, level_concat: str | None) -> str:
        """``tokens`` or ``channels``; None or ``auto``: the family's :attr:`LEVEL_CONCAT`."""
        if level_concat in (None, "auto"):
            return self.LEVEL_CONCAT
        if level_concat not in LEVEL_CONCATS:
            raise ValueError(f"level_concat {level_concat!r}: expected one of auto, {', '.join(LEVEL_CONCATS)}")
        return level_concat

    @property
    def feature_dim(self) -> int:
        """Width of the tokens :meth:`forward` returns: ``embed_dim``, times the number of levels
        when ``out_layers`` levels are joined along channels."""
        if self.out_layers is not None and self.level_concat == "channels":
            return self.embed_dim * len(self.out_layers)
        return self.embed_dim

    def join_levels(self, levels: list[torch.Tensor]) -> torch.Tensor:
        """The normalised tokens of each level ``[B, N, D]`` as one tensor: ``[B, L * N, D]``
        (tokens) or ``[B, N, L * D]`` (channels)."""
        return torch.cat(levels, dim=1 if self.level_concat == "tokens" else 2)

    def level_norm(self, index: int) -> nn.Module:
        """The norm that makes the tokens after block ``index`` a level (as ``out_layers`` levels
        are made): the final ``norm``, which every block shares here."""
        if not 0 <= index < self.depth:
            raise ValueError(f"level {index}: a {self.depth}-block encoder has levels 0 to {self.depth - 1}")
        return self.norm

    @property
    def num_layers(self) -> int:
        """Depth indices for layer decay: embeddings, each block, what follows the blocks."""
        return self.depth + 2

    def layer_id(self, name: str) -> int:
        """Depth index of a parameter (its name inside the encoder): 0 for the embeddings,
        ``i + 1`` for block ``i``, ``depth + 1`` for everything after the blocks (VideoMAE's
        ``get_num_layer_for_vit``, and V-JEPA 2's)."""
        match = re.match(r"blocks\.(\d+)\.", name)
        if match:
            return int(match.group(1)) + 1
        return 0 if name.startswith(self.EMBEDDINGS) else self.depth + 1

    def tubelet_for(self, frames: int) -> int:
        """Frames per temporal patch for a clip of ``frames`` frames (a family with an image path
        answers 1 for images)."""
        return self.tubelet_size

    def token_grid(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        """The ``(t, h, w)`` grid of the tokens of one clip ``[C, frames, height, width]``."""
        return frames // self.tubelet_for(frames), height // self.patch_size, width // self.patch_size

    def forward_flops(self, frames: int, height: int, width: int) -> int:
        """Analytic forward FLOPs of one clip ``[C, frames, height, width]`` (:mod:`harness.models.flops`)."""
        return encoder_forward_flops(frames=frames, img_size=(height, width), patch_size=self.patch_size,
                                     tubelet_size=self.tubelet_for(frames), embed_dim=self.embed_dim, depth=self.depth,
                                     mlp_ratio=self.mlp_ratio, use_silu=self.use_silu,
                                     wide_silu=self.wide_silu)  # fmt: skip

    def init_weights(self) -> None:
        """Every unit from its own seed (:func:`harness.models.family.init_all_units`)."""
        init_all_units(self)

    def run_blocks(self, tokens: torch.Tensor, *block_args) -> torch.Tensor:
        """The blocks, then ``norm``: ``[B, N, D]``, or with ``out_layers`` the normalised tokens
        after each of those blocks joined by :meth:`join_levels`."""
        levels = []
        for index, block in enumerate(self.blocks):
            tokens = block(tokens, *block_args)
            if self.out_layers is not None and index in self.out_layers:
                levels.append(self.norm(tokens))
        if self.out_layers is not None:
            return self.join_levels(levels)
        return self.norm(tokens)
