"""V-JEPA 2's spatiotemporal area attention (ST-A², ``use_area_attention``): which blocks have it,
how the token grid is cut into areas, and how tokens are grouped for one batched attention call.

The definition is Meta's (``RoPEAreaAttention`` in ``src/models/utils/modules.py`` and
``VisionTransformer`` in ``src/models/vision_transformer.py`` of facebookresearch/vjepa2 at
``073e524``; tests/fixtures/area_attention/README.md), reproduced here:

* **Blocks.** ``area_attention_layers = [start, end)``: block ``i`` has area attention when
  ``start <= i < end`` (``[0, 18]``: blocks 0 to 17 of 24); by default ``[0, int(0.75 * depth)]``.
  The other blocks keep full attention. No parameter is added: checkpoints keep their keys.
* **Areas.** Time steps are cut into ``area_temporal_splits`` bands of ``max(1, t // splits)``
  steps, the last band taking what is left over (and bands past ``t`` staying empty); rows of
  patches likewise into ``area_spatial_splits`` bands; columns are never cut. A token's area is
  ``time_band * area_spatial_splits + row_band``.
* **Grouping.** Tokens are ordered by area (grid order within one), padded with zero vectors to
  ``areas * M`` (``M``: the largest area's size) and cut into chunks of ``M``; chunk ``j``
  attends with its keys limited to its first ``size(area j)`` positions. When the areas are equal
  each chunk is one area (plain attention within areas). When they are not (a grid the splits do
  not divide, or empty areas), a chunk can straddle two areas, and a chunk's valid keys are
  counted by area ``j``'s size, whatever it holds, zero padding included: that is what Meta's
  code computes, so it is what this computes. Chunks holding only padding are skipped (their
  outputs are thrown away there too).
* **Positions.** RoPE rotates queries and keys by their place in the whole grid, before grouping.
* **Residual scale.** ``area_residual_scale`` multiplies the attention output of an area block
  before its output projection (whose bias it leaves alone).

Refused: a grid on which a chunk holding tokens gets no valid key at all (which needs fewer rows
of patches than ``area_spatial_splits``: an empty row band in front of a filled area); Meta's
output there is NaN or zeros depending on the attention kernel. V-JEPA 2 also applies area
attention to masked token sets in pretraining; the harness's encoders have no masked forward.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

DEFAULT_SPLITS = 2  #: Meta's default for both splits
DEFAULT_SHARE = 0.75  #: blocks ``[0, int(0.75 * depth))`` when ``area_attention_layers`` is not given


def area_blocks(depth: int, layers: Sequence[int] | None) -> tuple[int, ...]:
    """The blocks with area attention: ``start <= i < end`` for ``layers = [start, end]``
    (Meta's default ``[0, int(0.75 * depth)]`` for None)."""
    if layers is None:
        layers = (0, int(depth * DEFAULT_SHARE))
    whole = isinstance(layers, Sequence) and all(isinstance(v, int) and not isinstance(v, bool) for v in layers)
    if not whole or len(layers) != 2:
        raise ValueError(f"area_attention_layers={layers!r}: V-JEPA 2 reads two block indices [start, end) "
                         "(e.g. [0, 18]: blocks 0 to 17)")  # fmt: skip
    start, end = layers
    return tuple(index for index in range(depth) if start <= index < end)


def checked_area_blocks(depth: int, use_rope: bool, use_area_attention: bool, layers: Sequence[int] | None,
                        splits: tuple[int, int], residual_scale: float) -> tuple[int, ...]:  # fmt: skip
    """An encoder's area blocks (:func:`area_blocks`; ``()`` without ``use_area_attention``) from
    V-JEPA 2's keys; a ``ValueError`` naming the key for a value Meta's code refuses (splits below
    1, ``area_attention_layers`` not two block indices) or one that would change nothing (area
    attention without RoPE, ``area_*`` values without ``use_area_attention``)."""
    for name, value in zip(("area_spatial_splits", "area_temporal_splits"), splits):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}={value!r}: must be a whole number >= 1")
    if isinstance(residual_scale, bool) or not isinstance(residual_scale, (int, float)):
        raise ValueError(f"area_residual_scale={residual_scale!r}: must be a number")
    if use_area_attention and not use_rope:
        raise ValueError("use_area_attention needs use_rope: V-JEPA 2 builds area attention in RoPE blocks only "
                         "(with sin-cos positions its blocks keep full attention)")  # fmt: skip
    if use_area_attention:
        return area_blocks(depth, layers)
    given = {"area_attention_layers": (layers, None), "area_spatial_splits": (splits[0], DEFAULT_SPLITS),
             "area_temporal_splits": (splits[1], DEFAULT_SPLITS),
             "area_residual_scale": (residual_scale, 1.0)}  # fmt: skip
    for name, (value, default) in given.items():
        if value != default:
            raise ValueError(f"{name}={value!r} changes nothing without use_area_attention: true")
    return ()


def bands(length: int, splits: int) -> list[int]:
    """The band of each of ``length`` grid steps cut into ``splits`` bands of ``max(1, length //
    splits)`` steps, the last band taking the rest."""
    step = max(1, length // splits)
    return [min(index // step, splits - 1) for index in range(length)]


def area_sizes(grid: tuple[int, int, int], spatial_splits: int, temporal_splits: int) -> list[int]:
    """Tokens per area, in area order, for a ``(t, h, w)`` grid (empty areas included)."""
    t, h, w = grid
    steps, rows = bands(t, temporal_splits), bands(h, spatial_splits)
    return [steps.count(a) * rows.count(b) * w for a in range(temporal_splits) for b in range(spatial_splits)]


def chunk_shape(sizes: list[int]) -> tuple[int, int]:
    """``(chunks, length)``: the chunks holding tokens and their length (the largest area)."""
    length = max(sizes)
    return -(-sum(sizes) // length), length


class AreaLayout(NamedTuple):
    """How the ``N`` tokens of one grid are grouped (computed once per forward, shared by all area
    blocks; nothing in it depends on the batch)."""

    order: torch.Tensor  #: ``[chunks * length]`` token of each grouped position; ``N``: a zero vector
    inverse: torch.Tensor  #: ``[N]`` grouped position of each token
    chunks: int  #: chunks holding tokens
    length: int  #: positions per chunk
    keys: torch.Tensor | None  #: ``[chunks, length]`` bool, the keys each chunk may attend to; None: all

    def key_mask(self, batch: int) -> torch.Tensor | None:
        """The keys of ``[batch * chunks]`` grouped rows, ``[batch * chunks, 1, 1, length]``."""
        if self.keys is None:
            return None
        return self.keys.repeat(batch, 1)[:, None, None, :]


def checked_grouping(grid: tuple[int, int, int], spatial_splits: int,
                     temporal_splits: int) -> tuple[list[int], int, int]:  # fmt: skip
    """``(area sizes, chunks, length)`` of a ``(t, h, w)`` grid; a ``ValueError`` for a grid that
    would leave tokens without any key."""
    sizes = area_sizes(grid, spatial_splits, temporal_splits)
    chunks, length = chunk_shape(sizes)
    if 0 in sizes[:chunks]:
        raise ValueError(f"area attention on a {'x'.join(map(str, grid))} (time, rows, columns) token grid with "
                         f"area_spatial_splits={spatial_splits} and area_temporal_splits={temporal_splits}: "
                         "V-JEPA 2's grouping leaves tokens with no key to attend to (NaN or zeros, depending on "
                         f"the attention kernel); inputs with at least {spatial_splits} rows of patches "
                         "work")  # fmt: skip
    return sizes, chunks, length


def area_layout(grid: tuple[int, int, int], spatial_splits: int, temporal_splits: int,
                device: torch.device | str) -> AreaLayout:  # fmt: skip
    """The grouping of a ``(t, h, w)`` grid's tokens (module docstring; :func:`checked_grouping`)."""
    t, h, w = grid
    sizes, chunks, length = checked_grouping(grid, spatial_splits, temporal_splits)
    step_band = torch.tensor(bands(t, temporal_splits), device=device)
    row_band = torch.tensor(bands(h, spatial_splits), device=device)
    tokens = torch.arange(t * h * w, device=device)
    area = step_band[tokens // (h * w)] * spatial_splits + row_band[tokens % (h * w) // w]
    order = torch.sort(area, stable=True).indices
    inverse = torch.empty_like(order)
    inverse[order] = tokens
    padding = order.new_full((chunks * length - order.numel(),), order.numel())
    keys = None
    if len(set(sizes)) > 1:
        counts = torch.tensor(sizes[:chunks], device=device)
        keys = torch.arange(length, device=device)[None, :] < counts[:, None]
    return AreaLayout(torch.cat([order, padding]), inverse, chunks, length, keys)


def to_areas(x: torch.Tensor, layout: AreaLayout) -> torch.Tensor:
    """``[B, heads, N, d]`` -> grouped ``[B * chunks, heads, length, d]`` (zero vectors as padding)."""
    batch, heads, _, dim = x.shape
    padded = torch.cat([x, x.new_zeros(batch, heads, 1, dim)], dim=2).index_select(2, layout.order)
    return padded.unflatten(2, (layout.chunks, layout.length)).transpose(1, 2).flatten(0, 1)


def from_areas(x: torch.Tensor, layout: AreaLayout, batch: int) -> torch.Tensor:
    """Grouped ``[B * chunks, heads, length, d]`` -> ``[B, heads, N, d]`` in grid order."""
    grouped = x.unflatten(0, (batch, layout.chunks)).transpose(1, 2).flatten(2, 3)
    return grouped.index_select(2, layout.inverse)
