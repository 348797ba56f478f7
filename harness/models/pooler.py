"""Attentive pooling classifier and the clip-fusion wrapper.

Parameter names match V-JEPA 2's ``AttentivePooler`` / ``AttentiveClassifier`` (``pooler.
query_tokens``, ``pooler.cross_attention_block``, ``pooler.blocks``, ``linear``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from harness.models.layers import Block, CrossAttentionBlock

POOLER_ORDERS = ("tokens_first", "queries")


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
    ) -> None:
        super().__init__()
        if order not in POOLER_ORDERS:
            raise ValueError(f"pooler order must be one of {POOLER_ORDERS}, got {order!r}")
        self.order = order
        self.query_tokens = nn.Parameter(torch.zeros(1, num_queries, embed_dim))
        self.cross_attention_block = CrossAttentionBlock(embed_dim, num_heads, mlp_ratio, qkv_bias, use_sdpa)
        self.blocks = (
            nn.ModuleList(
                Block(embed_dim, num_heads, mlp_ratio, qkv_bias, use_sdpa=use_sdpa, norm_eps=1e-5)
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

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[B, N, D]`` tokens -> ``[B, num_queries, D]`` pooled queries."""
        if self.blocks is not None and self.order == "tokens_first":
            for block in self.blocks:
                tokens = block(tokens)
        queries = self.cross_attention_block(self.query_tokens.expand(len(tokens), -1, -1), tokens)
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

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[B, N, D]`` -> logits ``float32 [B, num_classes]``."""
        pooled = self.pooler(tokens).squeeze(1)
        with torch.autocast(device_type=pooled.device.type, enabled=False):
            # Upcast the weights too: under FSDP mixed precision or DeepSpeed bf16 they are bf16.
            bias = self.linear.bias.float() if self.linear.bias is not None else None
            return F.linear(pooled.float(), self.linear.weight.float(), bias)


class VideoClassifier(nn.Module):
    """Encoder + classifier over several clips per video, logits averaged over clips.

    Input ``[B, num_clips, C, T, H, W]`` (or ``[B, C, T, H, W]`` for one clip); output fp32
    logits ``[B, num_classes]``. With ``freeze_encoder`` the encoder runs under ``no_grad`` and
    stays in eval mode (no drop path) whatever mode the wrapper is put in.
    """

    def __init__(self, encoder: nn.Module, classifier: nn.Module, freeze_encoder: bool = False) -> None:
        super().__init__()
        self.encoder = encoder
        self.classifier = classifier
        self.freeze_encoder = freeze_encoder
        if freeze_encoder:
            encoder.requires_grad_(False)

    def train(self, mode: bool = True) -> VideoClassifier:
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()
        return self

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        if clips.dim() == 5:
            clips = clips[:, None]
        batch, num_clips = clips.shape[:2]
        flat = clips.flatten(0, 1)
        if self.freeze_encoder:
            with torch.no_grad():
                tokens = self.encoder(flat)
        else:
            tokens = self.encoder(flat)
        logits = self.classifier(tokens)
        return logits.view(batch, num_clips, -1).mean(dim=1)
