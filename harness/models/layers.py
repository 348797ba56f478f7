"""Transformer building blocks whose parameter names match V-JEPA 2's modules.

Names (``attn.qkv``, ``attn.proj``, ``mlp.fc1``/``fc2``/``fc3``, ``norm1``/``norm2``,
``xattn.q``/``xattn.kv``) are kept exactly so that released V-JEPA 2 checkpoints load as they are.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from harness.models.areas import AreaLayout, from_areas, to_areas


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, use_sdpa: bool = True, keys: torch.Tensor | None = None
) -> torch.Tensor:
    """Softmax attention of ``[B, heads, N, d]`` tensors: fused SDPA or the plain math path;
    ``keys`` (bool, broadcast to ``[B, heads, N, N]``) limits which keys each query sees."""
    if use_sdpa:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=keys)
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    if keys is not None:
        scores = scores.masked_fill(~keys, float("-inf"))
    return scores.softmax(dim=-1) @ v


def init_linear_and_norms(root: nn.Module, std: float, skip: nn.Module | None = None) -> None:
    """Truncated-normal weights and zero biases for every Linear/Conv3d under ``root``, unit
    weights and zero biases for every LayerNorm (the ViT initialisation both families share);
    modules under ``skip`` are left alone."""
    skipped = {id(m) for m in skip.modules()} if skip is not None else set()
    for module in root.modules():
        if id(module) in skipped:
            continue
        if isinstance(module, (nn.Linear, nn.Conv3d)):
            nn.init.trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def init_vit_block(block: nn.Module, index: int, std: float) -> None:
    """Initialise transformer block ``index`` (a :class:`Block`) as V-JEPA 2 does: truncated-normal
    linear weights, unit norms, and the residual outputs divided by ``sqrt(2 (index + 1))``."""
    init_linear_and_norms(block, std)
    block.attn.proj.weight.div_(math.sqrt(2.0 * (index + 1)))
    last = block.mlp.fc3 if hasattr(block.mlp, "fc3") else block.mlp.fc2
    last.weight.div_(math.sqrt(2.0 * (index + 1)))


def rotate_half_pairs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Apply V-JEPA 2's rotary embedding to ``x [B, heads, N, d]`` with ``cos``/``sin [N, d]``.

    Pairs are adjacent channels ``(x0, x1), (x2, x3), ...`` rotated as ``(-x1, x0)``, while the
    angle table is ``[f_0..f_{d/2-1}, f_0..f_{d/2-1}]``. That pairing differs from the textbook
    form, but it is what the released weights were trained with, so it is reproduced exactly.
    """
    pairs = x.unflatten(-1, (-1, 2))
    rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    return x * cos + rotated * sin


class RotaryTable(nn.Module):
    """cos/sin tables for 3D RoPE over a ``(t, h, w)`` token grid, computed for the actual grid.

    Each head's channels are split into depth, height and width parts of ``2 * (head_dim // 6)``
    channels each (any remainder is left unrotated), as V-JEPA 2 does.

    Args:
        head_dim: channels per attention head.
        interleaved: the angle layout of each part. False: ``[f_0..f_{k-1}, f_0..f_{k-1}]``
            (V-JEPA 2.0, see :func:`rotate_half_pairs`); True: ``[f_0, f_0, f_1, f_1, ...]``, each
            rotated channel pair sharing its frequency (V-JEPA 2.1's ``repeat_interleave``).
        reference_grid: with a value ``G``, row and column positions are rescaled to span
            ``0 .. G - 1`` whatever the grid's size (V-JEPA 2.1's ``interpolate_rope``: row ``i``
            of ``h`` sits at ``i * (G - 1) / (h - 1)``); time positions are never rescaled.
    """

    def __init__(self, head_dim: int, interleaved: bool = False, reference_grid: int | None = None) -> None:
        super().__init__()
        self.axis_dim = 2 * ((head_dim // 3) // 2)
        self.head_dim = head_dim
        self.interleaved = interleaved
        self.reference_grid = reference_grid

    def axis_angles(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        omega = torch.arange(self.axis_dim // 2, dtype=torch.float32, device=positions.device)
        omega = 1.0 / 10000 ** (omega / (self.axis_dim / 2.0))
        freq = positions.float()[:, None] * omega[None, :]
        if self.interleaved:
            return freq.cos().repeat_interleave(2, dim=-1), freq.sin().repeat_interleave(2, dim=-1)
        return freq.cos().repeat(1, 2), freq.sin().repeat(1, 2)

    def forward(self, grid: tuple[int, int, int], device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``[(cos, sin)]`` for depth, height, width; each ``[t*h*w, axis_dim]`` in fp32."""
        t, h, w = grid
        ids = torch.arange(t * h * w, device=device)
        depth, rest = ids // (h * w), ids % (h * w)
        rows, columns = (rest // w).float(), (rest % w).float()
        if self.reference_grid is not None:
            if h < 2 or w < 2:
                raise ValueError(f"RoPE interpolation needs at least 2x2 patches per frame, not {h}x{w}")
            # multiply, then divide, in fp32: the order V-JEPA 2.1 computes it in (bit-equal)
            rows = rows * (self.reference_grid - 1) / (h - 1)
            columns = columns * (self.reference_grid - 1) / (w - 1)
        return [self.axis_angles(p) for p in (depth, rows, columns)]


def apply_rope(x: torch.Tensor, tables: list[tuple[torch.Tensor, torch.Tensor]], axis_dim: int) -> torch.Tensor:
    """Rotate the depth/height/width channel groups of ``x [B, heads, N, d]``."""
    parts, start = [], 0
    for cos, sin in tables:
        parts.append(rotate_half_pairs(x[..., start : start + axis_dim], cos.to(x.dtype), sin.to(x.dtype)))
        start += axis_dim
    if start < x.shape[-1]:
        parts.append(x[..., start:])
    return torch.cat(parts, dim=-1)


class Attention(nn.Module):
    """Multi-head self-attention with optional 3D RoPE on queries and keys.

    With ``area_attention`` the tokens attend within the groups of an :class:`AreaLayout` (V-JEPA
    2's area attention, :mod:`harness.models.areas`) and the attention output is multiplied by
    ``area_residual_scale`` before the output projection; the parameters are the same either way.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, use_sdpa: bool = True, use_rope: bool = False,
                 area_attention: bool = False, area_residual_scale: float = 1.0) -> None:  # fmt: skip
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed dim {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.use_sdpa = use_sdpa
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.rope_axis_dim = 2 * ((dim // num_heads // 3) // 2) if use_rope else 0
        self.area_attention, self.area_residual_scale = area_attention, area_residual_scale

    def forward(self, x: torch.Tensor, rope: list | None = None, areas: AreaLayout | None = None) -> torch.Tensor:
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(x).unflatten(-1, (3, self.num_heads, -1)).permute(2, 0, 3, 1, 4)
        if rope is not None:
            q, k = apply_rope(q, rope, self.rope_axis_dim), apply_rope(k, rope, self.rope_axis_dim)
        if not self.area_attention:
            out = attention(q, k, v, self.use_sdpa)
        elif areas is None:
            raise ValueError("an area-attention block needs the token grid's AreaLayout")
        else:
            grouped = attention(*(to_areas(t, areas) for t in (q, k, v)), self.use_sdpa, areas.key_mask(batch))
            out = from_areas(grouped, areas, batch)
        out = out.transpose(1, 2).reshape(batch, tokens, dim)
        if self.area_attention and self.area_residual_scale != 1.0:
            out = out * self.area_residual_scale
        return self.proj(out)


class MLP(nn.Module):
    """Two-layer MLP (``fc1`` -> activation -> ``fc2``)."""

    def __init__(self, dim: int, hidden: int, act_layer: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def swiglu_hidden(hidden: int, wide_silu: bool) -> int:
    """SwiGLU width: ``2/3`` of the MLP width rounded up to a multiple of 8 when ``wide_silu``."""
    if not wide_silu:
        return hidden
    return (int(2 * hidden / 3) + 7) // 8 * 8


class SwiGLU(nn.Module):
    """Gated MLP: ``fc3(silu(fc1(x)) * fc2(x))``."""

    def __init__(self, dim: int, hidden: int, wide_silu: bool = True) -> None:
        super().__init__()
        width = swiglu_hidden(hidden, wide_silu)
        self.fc1 = nn.Linear(dim, width)
        self.fc2 = nn.Linear(dim, width)
        self.fc3 = nn.Linear(width, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(F.silu(self.fc1(x)) * self.fc2(x))


class DropPath(nn.Module):
    """Stochastic depth: drop the residual branch per sample with probability ``rate``."""

    def __init__(self, rate: float = 0.0) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rate == 0.0 or not self.training:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        use_sdpa: bool = True,
        use_rope: bool = False,
        use_silu: bool = False,
        wide_silu: bool = True,
        norm_eps: float = 1e-6,
        area_attention: bool = False,
        area_residual_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias, use_sdpa, use_rope, area_attention, area_residual_scale)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        hidden = int(dim * mlp_ratio)
        self.mlp = SwiGLU(dim, hidden, wide_silu) if use_silu else MLP(dim, hidden)

    def forward(self, x: torch.Tensor, rope: list | None = None, areas: AreaLayout | None = None) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), rope, areas))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class CrossAttention(nn.Module):
    """Queries ``[B, n, D]`` attend to tokens ``[B, N, D]``.

    V-JEPA 2's cross-attention has no output projection (its ``proj`` is commented out), so
    there is none by default and released probes load strictly; ``output_projection`` adds one
    (``xattn.proj``) for models that want it, never silently.
    """

    def __init__(
        self, dim: int, num_heads: int, qkv_bias: bool = True, use_sdpa: bool = True, output_projection: bool = False
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.use_sdpa = use_sdpa
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim) if output_projection else nn.Identity()

    def forward(self, queries: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        batch, count, dim = queries.shape
        q = self.q(queries).unflatten(-1, (self.num_heads, -1)).transpose(1, 2)
        k, v = self.kv(tokens).unflatten(-1, (2, self.num_heads, -1)).permute(2, 0, 3, 1, 4)
        out = attention(q, k, v, self.use_sdpa)
        return self.proj(out.transpose(1, 2).reshape(batch, count, dim))


class CrossAttentionBlock(nn.Module):
    """``q + xattn(q, norm1(tokens))``, then ``q + mlp(norm2(q))`` (V-JEPA 2's pooler block)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        use_sdpa: bool = True,
        output_projection: bool = False,
        norm_eps: float = 1e-5,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.xattn = CrossAttention(dim, num_heads, qkv_bias, use_sdpa, output_projection)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = MLP(dim, int(dim * mlp_ratio))

    def forward(self, queries: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        queries = queries + self.xattn(queries, self.norm1(tokens))
        return queries + self.mlp(self.norm2(queries))
