"""Where the attentive probe looked: its cross-attention weights over the encoder's tokens, folded
back onto each clip's token grid ``[T', H', W']``.

The probe (:class:`~harness.models.pooler.AttentiveClassifier`) pools the tokens with one
cross-attention: a learnt query's softmax over the tokens. :func:`recording_attention` records that
softmax during a normal forward, from the query and key projections the forward computes anyway
(forward hooks that read and return nothing), so the logits are the same bits as without it and a
forward without the context pays nothing. The weights are averaged over heads (and queries).

What the weights are: where the query looked, i.e. how much each token contributes to the pooled
vector. They are not a causal attribution (the tokens have mixed with each other in the encoder's
blocks, and with ``pooler depth > 1`` in the ``tokens_first`` order, in the pooler's blocks too; a
token's position is where it sits, not only what it saw).

Grids: clip ``[C, T, H, W]`` -> ``T / tubelet`` steps (one for a 1-frame clip) of ``H / patch`` x
``W / patch`` patches. ``out_layers`` levels joined along the token axis: the levels' weights of
the same patch are summed (one map per clip). Several clips and views: one map per clip and view;
with ``concat_tokens`` the probe's one softmax spans all the clips of a view (joined along time),
with ``average_logits`` each clip has its own, divided here by the number of clips, so that in
both cases each view's maps sum to 1 over its clips.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from harness.models.layers import CrossAttention
from harness.models.pooler import AttentiveClassifier, MultiHeadClassifier


def probe_attention(model: nn.Module, head: int = 0) -> CrossAttention | None:
    """The cross-attention whose weights pick the tokens of ``model``'s (a
    :class:`~harness.models.pooler.VideoClassifier`) attentive probe (of head ``head`` of a
    multi-head classifier), or None for a classifier without one (the linear head)."""
    classifier = getattr(model, "classifier", model)
    if isinstance(classifier, MultiHeadClassifier):
        classifier = classifier.heads[head]
    if not isinstance(classifier, AttentiveClassifier):
        return None
    return classifier.pooler.cross_attention_block.xattn


class AttentionRecorder:
    """The probe's cross-attention weights of every forward inside :func:`recording_attention`:
    ``weights``, one ``float32 [M, N]`` per call (``M`` token sequences of ``N`` tokens)."""

    def __init__(self, module: CrossAttention) -> None:
        self.module = module
        self.weights: list[torch.Tensor] = []
        self._q: torch.Tensor | None = None
        self._kv: torch.Tensor | None = None

    def keep_q(self, _module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        self._q = output.detach()

    def keep_kv(self, _module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        self._kv = output.detach()

    def record(self, _module: nn.Module, _inputs: tuple, _output: torch.Tensor) -> None:
        """The softmax the attention computed (the math path's, in fp32), mean over heads and queries."""
        heads = self.module.num_heads
        q = self._q.float().unflatten(-1, (heads, -1)).transpose(1, 2)  # [M, heads, n, d]
        k = self._kv.float().unflatten(-1, (2, heads, -1))[:, :, 0].transpose(1, 2)  # [M, heads, N, d]
        scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
        self.weights.append(scores.softmax(dim=-1).mean(dim=(1, 2)))
        self._q = self._kv = None


@contextlib.contextmanager
def recording_attention(model: nn.Module, head: int = 0) -> Iterator[AttentionRecorder]:
    """Record the probe's cross-attention weights of the forwards run inside (see the module docs).

    Raises:
        ValueError: the model's classifier has no attentive probe (:func:`probe_attention`).
    """
    module = probe_attention(model, head)
    if module is None:
        raise ValueError("the model's classifier has no attention probe (a linear head pools without attention)")
    recorder = AttentionRecorder(module)
    handles = [module.q.register_forward_hook(recorder.keep_q), module.kv.register_forward_hook(recorder.keep_kv),
               module.register_forward_hook(recorder.record)]  # fmt: skip
    try:
        yield recorder
    finally:
        for handle in handles:
            handle.remove()


@dataclass
class AttentionMaps:
    """The probe's attention of a batch of videos on their clips' token grids.

    Attributes:
        weights: ``float32 [B, clips, views, T', H', W']``; for each video and view the weights sum
            to 1 over its clips and their grids (see the module docs).
        tubelet_size: frames per time step (``T = T' x tubelet`` frames per clip, or 1 frame).
        patch_size: pixels per patch side (``H = H' x patch``).
    """

    weights: torch.Tensor
    tubelet_size: int
    patch_size: int

    def over_time(self) -> torch.Tensor:
        """Attention mass per time step ``float32 [B, clips x T']`` (clip after clip), mean over
        views: each row sums to 1."""
        return self.weights.mean(dim=2).sum(dim=(-2, -1)).flatten(1)

    def frame_spans(self, clip_indices: torch.Tensor) -> torch.Tensor:
        """The first and last source frame of each time step ``int64 [B, clips x T', 2]``, from the
        clips' frame indices ``[B, clips x views, T]`` (clip-major, as the model takes them)."""
        batch, clips, views, steps = self.weights.shape[:4]
        frames = clip_indices.view(batch, clips, views, -1)[:, :, 0].cpu()
        frames = frames.reshape(batch, clips, steps, -1)  # [B, clips, T', frames per step]
        return torch.stack((frames[..., 0], frames[..., -1]), dim=-1).flatten(1, 2)


def fold_attention(model: nn.Module, weights: torch.Tensor, clips_shape: tuple[int, ...],
                   num_views: int = 1) -> AttentionMaps:  # fmt: skip
    """Recorded weights (:class:`AttentionRecorder`, its calls joined: ``[M, N]``) of a forward of
    ``model`` (a :class:`~harness.models.pooler.VideoClassifier`) on clips of ``clips_shape``
    (``[B, clips x views, C, T, H, W]`` or ``[B, C, T, H, W]``) onto their token grids."""
    shape = tuple(clips_shape) if len(clips_shape) == 6 else (clips_shape[0], 1, *clips_shape[1:])
    batch, count, _, frames, height, width = shape
    encoder = model.encoder
    tubelet = encoder.tubelet_for(frames) if hasattr(encoder, "tubelet_for") else encoder.tubelet_size
    patch = encoder.patch_size
    grid = (max(1, frames // tubelet), height // patch, width // patch)
    cells = grid[0] * grid[1] * grid[2]
    clips = count // num_views
    per_clip = weights.shape[1] if model.clip_aggregation == "average_logits" else weights.shape[1] // clips
    if per_clip % cells or weights.shape[0] * weights.shape[1] != batch * count * per_clip:
        raise ValueError(f"attention weights {tuple(weights.shape)} do not fit {batch} videos of {count} clips "
                         f"of {grid} tokens")  # fmt: skip
    levels = per_clip // cells  # out_layers joined along the token axis: summed below
    if model.clip_aggregation == "average_logits":  # rows: video, clip, view; each row sums to 1
        folded = weights.reshape(batch, clips, num_views, levels, *grid).sum(dim=3) / clips
    else:  # rows: video, view; the clips joined along the tokens
        folded = weights.reshape(batch, num_views, clips, levels, *grid).sum(dim=3).transpose(1, 2)
    return AttentionMaps(folded.float().cpu(), tubelet, patch)


def forward_with_attention(model: nn.Module, clips: torch.Tensor, clip_indices: torch.Tensor | None = None,
                           num_views: int = 1, head: int = 0) -> tuple[torch.Tensor, AttentionMaps]:  # fmt: skip
    """``model(clips, clip_indices, num_views)``'s logits (the same bits as without recording) and
    its probe's :class:`AttentionMaps` (of head ``head`` of a multi-head classifier)."""
    with recording_attention(model, head) as recorder:
        logits = model(clips, clip_indices, num_views)
    return logits, fold_attention(model, torch.cat(recorder.weights), clips.shape, num_views)
