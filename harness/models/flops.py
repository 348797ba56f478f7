"""Analytic FLOP counts of the video ViT (multiply-add = 2 FLOPs).

For ``N = (T / tubelet) * (H / patch) * (W / patch)`` tokens of width ``D`` and MLP width ``M``:

* patch embedding: ``2 * N * (3 * tubelet * patch^2) * D``
* per block: qkv ``2 * N * D * 3D`` + scores ``2 * N^2 * D`` + weighted sum ``2 * N^2 * D`` +
  output projection ``2 * N * D^2`` + MLP ``2 * N * D * M * 2`` (GELU; SwiGLU: ``* 3`` with its
  narrower width); a block with V-JEPA 2's area attention (:mod:`harness.models.areas`) has
  ``chunks * L^2`` query-key pairs instead of ``N^2`` (``L``: the largest area; padding included,
  as the kernel computes it): ``N^2 / areas`` when the splits divide the grid
* training (forward + backward) = 3 x forward; norms, softmax, biases and the classifier head
  are left out (well under 1% for the sizes here).
"""

from __future__ import annotations

from harness.core.crop import CropSize, crop_hw
from harness.models.areas import area_sizes, chunk_shape
from harness.models.layers import swiglu_hidden


def attention_flops(grid: tuple[int, int, int], embed_dim: int, area_splits: tuple[int, int] | None = None) -> int:
    """Scores and weighted sum of one block over a ``(t, h, w)`` token grid: ``4 * pairs * D``,
    ``pairs`` = ``N^2``, or with ``area_splits`` (spatial, temporal) ``chunks * L^2``."""
    if area_splits is None:
        pairs = (grid[0] * grid[1] * grid[2]) ** 2
    else:
        chunks, length = chunk_shape(area_sizes(grid, *area_splits))
        pairs = chunks * length**2
    return 4 * pairs * embed_dim


def clip_grid(frames: int, crop_size: CropSize, patch_size: int, tubelet_size: int) -> tuple[int, int, int]:
    """The ``(t, h, w)`` token grid of one clip ``[C, frames, height, width]`` (``crop_size``: one
    side, or ``(height, width)``): ``frames / tubelet`` time steps of ``(height / patch) x
    (width / patch)`` patches; a 1-frame clip (an image, through an image path) is one step."""
    height, width = crop_hw(crop_size)
    return max(1, frames // tubelet_size), height // patch_size, width // patch_size


def clip_tokens(frames: int, crop_size: CropSize, patch_size: int, tubelet_size: int) -> int:
    """Encoder tokens of one clip (:func:`clip_grid`'s cells)."""
    steps, rows, columns = clip_grid(frames, crop_size, patch_size, tubelet_size)
    return steps * rows * columns


def encoder_forward_flops(
    frames: int,
    img_size: CropSize,
    patch_size: int,
    tubelet_size: int,
    embed_dim: int,
    depth: int,
    mlp_ratio: float = 4.0,
    use_silu: bool = False,
    wide_silu: bool = True,
    in_chans: int = 3,
) -> int:
    """Forward FLOPs of one clip ``[C, frames, height, width]`` through the encoder (``img_size``:
    one side, or ``(height, width)``)."""
    grid = clip_grid(frames, img_size, patch_size, tubelet_size)
    tokens = grid[0] * grid[1] * grid[2]
    dim = embed_dim
    hidden = int(dim * mlp_ratio)
    if use_silu:
        mlp = 2 * tokens * dim * swiglu_hidden(hidden, wide_silu) * 3
    else:
        mlp = 2 * tokens * dim * hidden * 2
    block = 2 * tokens * dim * 3 * dim + attention_flops(grid, dim) + 2 * tokens * dim * dim + mlp
    patch = 2 * tokens * in_chans * tubelet_size * patch_size**2 * dim
    return patch + depth * block


def encoder_train_flops(**kwargs) -> int:
    """Forward + backward FLOPs of one clip (3x forward)."""
    return 3 * encoder_forward_flops(**kwargs)
