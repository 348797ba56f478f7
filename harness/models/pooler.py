"""Attentive pooling classifier and the clip-aggregation wrapper.

Parameter names and computation match V-JEPA 2's ``AttentivePooler`` / ``AttentiveClassifier``
(``pooler.query_tokens``, ``pooler.cross_attention_block``, ``pooler.blocks``, ``linear``), so its
released probe weights load strictly and give its logits.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.models.layers import Block, CrossAttentionBlock

POOLER_ORDERS = ("tokens_first", "queries")
CLIP_AGGREGATIONS = ("average_logits", "concat_tokens")


class AttentivePooler(nn.Module):
    """Learnable queries that cross-attend to encoder tokens.

    Args:
        num_queries: learnable query tokens.
        embed_dim, num_heads, mlp_ratio: block sizes (heads default to the encoder's).
        depth: one cross-attention block plus ``depth - 1`` self-attention blocks.
        order: where the self-attention blocks run. ``tokens_first`` (default) runs them over
            the encoder tokens before the cross-attention, as V-JEPA 2's released probes do, so
            their weights load with the same meaning; ``queries`` runs them over the pooled
            queries after the cross-attention (V-JEPA 1 style, much cheaper for long videos).
        output_projection: a ``Linear`` after the cross-attention (``xattn.proj``). V-JEPA 2 has
            none; off by default.
        norm_eps: LayerNorm epsilon: ``1e-5`` in V-JEPA 2's probes, ``1e-6`` in Hugging Face's.

    Initialisation follows V-JEPA 2: truncated-normal linear weights, and the residual output
    layers of self-attention block ``i`` (1-based) divided by ``sqrt(2 i)``; the cross-attention
    block's MLP output shares the last block's factor (``sqrt(2)`` without blocks).
    """

    def __init__(
        self,
        num_queries: int = 1,
        embed_dim: int = 768,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        depth: int = 1,
        qkv_bias: bool = True,
        use_sdpa: bool = True,
        order: str = "tokens_first",
        init_std: float = 0.02,
        output_projection: bool = False,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if order not in POOLER_ORDERS:
            raise ValueError(f"pooler order must be one of {POOLER_ORDERS}, got {order!r}")
        self.order = order
        self.query_tokens = nn.Parameter(torch.zeros(1, num_queries, embed_dim))
        self.cross_attention_block = CrossAttentionBlock(
            embed_dim, num_heads, mlp_ratio, qkv_bias, use_sdpa, output_projection, norm_eps
        )
        self.blocks = (
            nn.ModuleList(
                Block(embed_dim, num_heads, mlp_ratio, qkv_bias, use_sdpa=use_sdpa, norm_eps=norm_eps)
                for _ in range(depth - 1)
            )
            if depth > 1
            else None
        )
        nn.init.trunc_normal_(self.query_tokens, std=init_std)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=init_std)
                nn.init.zeros_(module.bias)
        layer = 0
        for layer, block in enumerate(self.blocks or [], start=1):
            block.attn.proj.weight.data.div_(math.sqrt(2.0 * layer))
            block.mlp.fc2.weight.data.div_(math.sqrt(2.0 * layer))
        self.cross_attention_block.mlp.fc2.weight.data.div_(math.sqrt(2.0 * max(layer, 1)))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[B, N, D]`` tokens -> ``[B, num_queries, D]`` pooled queries."""
        if self.blocks is not None and self.order == "tokens_first":
            for block in self.blocks:
                tokens = block(tokens)
        queries = self.cross_attention_block(self.query_tokens.expand(tokens.shape[0], -1, -1), tokens)
        if self.blocks is not None and self.order == "queries":
            for block in self.blocks:
                queries = block(queries)
        return queries


class AttentiveClassifier(nn.Module):
    """Attentive pooler + linear head; the head runs in fp32 even under bf16 autocast."""

    def __init__(self, embed_dim: int, num_classes: int, num_heads: int = 12, depth: int = 1, **pooler_kwargs) -> None:
        super().__init__()
        self.pooler = AttentivePooler(1, embed_dim, num_heads, depth=depth, **pooler_kwargs)
        self.linear = nn.Linear(embed_dim, num_classes)

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[B, N, D]`` -> the pooled vector ``[B, D]`` that the linear layer reads."""
        return self.pooler(tokens).squeeze(1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[B, N, D]`` -> logits ``float32 [B, num_classes]``."""
        pooled = self.pool(tokens)
        with torch.autocast(device_type=pooled.device.type, enabled=False):
            # Upcast the weights too: under FSDP mixed precision or DeepSpeed bf16 they are bf16.
            bias = self.linear.bias.float() if self.linear.bias is not None else None
            return F.linear(pooled.float(), self.linear.weight.float(), bias)


class MultiHeadClassifier(nn.Module):
    """Several attentive classifiers over the same tokens (V-JEPA 2 trains a grid of probes from
    one frozen-encoder pass): ``[B, N, D]`` -> logits ``float32 [B, heads, num_classes]``.

    Head ``i``'s parameters are ``heads.i.*`` with the single head's names below that.
    """

    def __init__(self, heads: list[nn.Module]) -> None:
        super().__init__()
        if len(heads) < 2:
            raise ValueError("a multi-head classifier needs at least 2 heads (use the head itself otherwise)")
        self.heads = nn.ModuleList(heads)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.stack([head(tokens) for head in self.heads], dim=1)


def sincos_table_1d(dim: int, length: int) -> torch.Tensor:
    """``[length, dim]`` table ``[sin(p w_k), cos(p w_k)]`` with ``w_k = 10000^(-2k/dim)``."""
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    angles = np.arange(length, dtype=np.float64)[:, None] * omega[None, :]
    return torch.from_numpy(np.concatenate([np.sin(angles), np.cos(angles)], axis=1)).float()


class VideoClassifier(nn.Module):
    """Encoder + classifier over several clips (and spatial views) per video.

    Input ``[B, K, C, T, H, W]`` (or ``[B, C, T, H, W]`` for one clip) with ``K = clips x views``
    in clip-major order (clip ``c``, view ``v`` at ``c * views + v``); output fp32 logits
    ``[B, num_classes]`` (``[B, heads, num_classes]`` with a :class:`MultiHeadClassifier`). How clips
    become one prediction (``clip_aggregation``):

    * ``average_logits`` (the seed app's way): every clip and view is classified on its own and
      the logits are averaged.
    * ``concat_tokens`` (V-JEPA 2's evaluation): each clip is encoded on its own, the tokens of
      all clips of one view are concatenated along time (plus, with ``temporal_pos_embed``, a 1D
      sin-cos table indexed by the clips' frame indices), the probe attends over all of them, and
      views are combined as the mean of their softmax: the output is ``log(mean_v softmax)``,
      whose argmax is V-JEPA 2's prediction (with one view it is the view's logits as they are).

    With ``freeze_encoder`` the encoder runs under ``no_grad`` and stays in eval mode (no drop
    path) whatever mode the wrapper is put in. ``frozen_inference_mode = True`` runs it under
    ``torch.inference_mode`` instead (tokens cloned out for the head): measured 1.0-1.09x on a CPU
    (bench/bench_frozen.py), and under ZeRO-3 it breaks training, since DeepSpeed prefetches the
    head's parameters during the encoder's forward, which makes them inference tensors; so off.
    """

    frozen_inference_mode = False

    def __init__(
        self,
        encoder: nn.Module,
        classifier: nn.Module,
        freeze_encoder: bool = False,
        clip_aggregation: str = "average_logits",
        temporal_pos_embed: bool = False,
        max_frames: int = 128,
    ) -> None:
        super().__init__()
        if clip_aggregation not in CLIP_AGGREGATIONS:
            raise ValueError(f"clip_aggregation must be one of {CLIP_AGGREGATIONS}, got {clip_aggregation!r}")
        self.encoder = encoder
        self.classifier = classifier
        self.freeze_encoder = freeze_encoder
        self.clip_aggregation = clip_aggregation
        self.tubelet_size = getattr(encoder, "tubelet_size", 1)
        if temporal_pos_embed:
            table = sincos_table_1d(encoder.feature_dim, max_frames // self.tubelet_size)
            # Fixed and recomputable: a non-persistent buffer, as V-JEPA 2 never saves it either.
            self.register_buffer("temporal_pos_embed", table, persistent=False)
        else:
            self.temporal_pos_embed = None
        if freeze_encoder:
            encoder.requires_grad_(False)

    def train(self, mode: bool = True) -> VideoClassifier:
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()
        return self

    def encode(self, clips: torch.Tensor) -> torch.Tensor:
        """``[M, C, T, H, W]`` -> tokens ``[M, N, D]`` (no gradient with a frozen encoder)."""
        if not self.freeze_encoder:
            return self.encoder(clips)
        if not self.frozen_inference_mode:
            with torch.no_grad():
                return self.encoder(clips)
        with torch.inference_mode():
            tokens = self.encoder(clips)
        return tokens.clone()  # a normal tensor again: the head's backward may save it

    def forward(
        self,
        clips: torch.Tensor,
        clip_indices: torch.Tensor | None = None,
        num_views: int = 1,
        stage: str = "all",
        frames: int | None = None,
    ) -> torch.Tensor:
        """Logits ``float32 [B, num_classes]``.

        Args:
            clips: ``[B, K, C, T, H, W]``, ``K = clips x num_views`` (clip-major); with
                ``stage="classify"``, the tokens ``[B, K, N, D]`` of ``stage="encode"``.
            clip_indices: ``int64 [B, K, T]`` source frame indices (for ``temporal_pos_embed``).
            num_views: spatial views per clip in ``clips``.
            stage: ``all`` (clips -> logits), ``encode`` (clips -> tokens ``[B, K, N, D]`` only)
                or ``classify`` (those tokens -> logits; ``frames`` is the clips' ``T``). The two
                halves let a frozen encoder run once over several of the heads' micro-batches
                (``data.encoder_batch_size``); they go through the strategy's wrapper like a whole
                forward.
        """
        if stage not in ("all", "encode", "classify"):
            raise ValueError(f"stage must be all, encode or classify, got {stage!r}")
        if stage == "classify":
            if frames is None:
                raise ValueError("stage='classify' needs the clips' frame count (frames)")
            return self.classify(clips, clip_indices, num_views, frames)
        if clips.dim() == 5:
            clips = clips[:, None]
        batch, count = clips.shape[:2]
        tokens = self.encode(clips.flatten(0, 1))
        tokens = tokens.view(batch, count, *tokens.shape[1:])
        if stage == "encode":
            return tokens
        return self.classify(tokens, clip_indices, num_views, clips.shape[3])

    def classify(
        self, tokens: torch.Tensor, clip_indices: torch.Tensor | None, num_views: int, frames: int
    ) -> torch.Tensor:
        """Tokens ``[B, K, N, D]`` of clips of ``frames`` frames -> logits (see :meth:`forward`)."""
        batch, count = tokens.shape[:2]
        tokens = tokens.flatten(0, 1)
        if self.clip_aggregation == "average_logits":
            logits = self.classifier(tokens)
            return logits.view(batch, count, *logits.shape[1:]).mean(dim=1)
        if count % num_views:
            raise ValueError(f"{count} clips per video is not a multiple of num_views={num_views}")
        per_view = self.concat_clip_tokens(tokens, batch, count // num_views, num_views, clip_indices, frames)
        logits = self.classifier(per_view)
        logits = logits.view(batch, num_views, *logits.shape[1:])
        if num_views == 1:
            return logits[:, 0]
        return torch.logsumexp(logits.float().log_softmax(dim=-1), dim=1) - math.log(num_views)

    def concat_clip_tokens(
        self,
        tokens: torch.Tensor,
        batch: int,
        num_clips: int,
        num_views: int,
        clip_indices: torch.Tensor | None,
        frames: int,
    ) -> torch.Tensor:
        """``[B * clips * views, N, D]`` -> ``[B * views, clips * N, D]``: each view's clips joined
        along time (``N`` is viewed as ``(T, N / T)`` so the temporal table lines up as in V-JEPA 2)."""
        _, count, dim = tokens.shape
        steps = max(1, frames // self.tubelet_size)  # a 1-frame clip (image path): one step
        grid = tokens.view(batch, num_clips, num_views, steps, count // steps, dim).transpose(1, 2)
        if self.temporal_pos_embed is not None:
            if clip_indices is None:
                raise ValueError("temporal_pos_embed needs the clips' frame indices (clip_indices)")
            positions = clip_indices.view(batch, num_clips, num_views, -1)[..., :: self.tubelet_size]
            if int(positions.max()) >= len(self.temporal_pos_embed):
                raise ValueError(
                    f"frame index {int(positions.max())} is beyond the temporal table of "
                    f"{len(self.temporal_pos_embed)} steps: raise max_frames"
                )
            table = self.temporal_pos_embed[positions.transpose(1, 2)]  # [B, views, clips, T, D]
            grid = grid + table[..., None, :].to(grid.dtype)
        return grid.reshape(batch * num_views, -1, dim)
