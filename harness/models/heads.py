"""The linear classifier head: pool the tokens, normalise, one Linear (VideoMAE's head).

Parameter names are VideoMAE's (``fc_norm``, ``head``), so its fine-tuned heads load as they are.
"""

from __future__ import annotations

import torch
from torch import nn


class LinearClassifier(nn.Module):
    """``[B, N, D]`` tokens -> fp32 logits ``[B, num_classes]``.

    Args:
        embed_dim: token width.
        num_classes: output classes.
        pooling: ``mean`` (mean over tokens, then ``fc_norm``) or ``first`` (the first token,
            no norm: VideoMAE without mean pooling, whose encoder normalises instead).
        norm_eps: ``fc_norm`` epsilon (VideoMAE 1e-6; ``transformers``' VideoMAE 1e-5).
        dropout: dropout before the Linear (VideoMAE's ``head_drop_rate``).
        init_scale: the Linear's initial weights are scaled by this (VideoMAE's ``init_scale``).
    """

    def __init__(self, embed_dim: int, num_classes: int, pooling: str = "mean", norm_eps: float = 1e-6,
                 dropout: float = 0.0, init_scale: float = 1.0) -> None:  # fmt: skip
        super().__init__()
        if pooling not in ("mean", "first"):
            raise ValueError(f"pooling must be 'mean' or 'first', got {pooling!r}")
        self.pooling = pooling
        self.fc_norm = nn.LayerNorm(embed_dim, eps=norm_eps) if pooling == "mean" else None
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(embed_dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        with torch.no_grad():
            self.head.weight.mul_(init_scale)

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[B, N, D]`` -> the pooled vector ``[B, D]`` that the Linear reads (before dropout)."""
        if self.fc_norm is not None:
            return self.fc_norm(tokens.mean(dim=1))
        return tokens[:, 0]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.pool(tokens))).float()
