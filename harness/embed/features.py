"""Features of clips from a model, one vector (or token grid) per video: the library behind
``python -m harness.embed`` (:func:`embed_clips`), usable on its own.

``pooled`` is the mean of the encoder's output tokens; ``probe`` the vector the classifier's final
linear layer reads (the attentive probe's pooled query, or a linear head's normalised mean);
``levels`` the mean of the normalised tokens after each chosen block (as ``out_layers`` levels
are made); ``tokens`` every output token on its ``[T', H', W']`` grid. One forward of the encoder
gives all of them. A video's clips and spatial views are averaged (``pooled``, ``probe``,
``levels``; for a classifier that joins its clips' tokens, ``concat_tokens``, the probe pools
each view over all clips and the views are averaged); ``tokens`` keeps every clip and view.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from harness.models.pooler import VideoClassifier

FEATURES = ("pooled", "probe", "levels", "tokens")  #: every feature :func:`embed_clips` computes
NORMALIZATIONS = ("l2",)  #: what ``normalize`` may be besides None


def split_model(model: nn.Module) -> tuple[nn.Module, VideoClassifier | None]:
    """``(encoder, classifier model or None)`` of a :class:`VideoClassifier` or a bare encoder."""
    if isinstance(model, VideoClassifier):
        return model.encoder, model
    return model, None


def check_request(model: nn.Module, features: Sequence[str], levels: Sequence[int]) -> None:
    """A ``ValueError`` saying why ``model`` cannot give ``features`` (with ``levels``), if it cannot."""
    unknown = [name for name in features if name not in FEATURES]
    if unknown or not features:
        raise ValueError(f"features {list(features)}: choose from {', '.join(FEATURES)}")
    encoder, classifier = split_model(model)
    if "probe" in features and (classifier is None or not hasattr(classifier.classifier, "pool")):
        what = "an encoder without a classifier" if classifier is None else "a classifier without one pooled vector"
        raise ValueError(f"the probe feature needs a trained probe; this model is {what} (use pooled or levels)")
    if "levels" in features:
        if not levels:
            raise ValueError("the levels feature needs the blocks to read (levels, e.g. 5,11,17,23)")
        for index in levels:
            encoder.level_norm(index)  # raises for a block without a normalised output
    elif levels:
        raise ValueError("levels are read by the levels feature only: add it to the features")


@torch.no_grad()
def embed_clips(model: nn.Module, clips: torch.Tensor, clip_indices: torch.Tensor | None = None, num_views: int = 1,
                features: Sequence[str] = ("pooled",), levels: Sequence[int] = (),
                normalize: str | None = None) -> dict[str, torch.Tensor]:  # fmt: skip
    """The ``features`` of each video of a batch, in float32, from one encoder forward.

    Args:
        model: a :class:`VideoClassifier` (what :func:`harness.export.model_io.load_classifier`
            returns) or a bare encoder of a registered family, in eval mode.
        clips: normalised clips ``[B, K, C, T, H, W]``, ``K = clips x num_views`` clip-major (as
            the classifier takes them), or ``[B, C, T, H, W]`` for one clip.
        clip_indices: ``int64 [B, K, T]`` source frame indices (a classifier with a temporal table).
        num_views: spatial views per clip in ``clips``.
        features: names among :data:`FEATURES`.
        levels: blocks (0-based) whose normalised tokens make the ``levels`` feature.
        normalize: ``"l2"`` scales every vector (every level, every token) to unit length, after
            the averaging over clips and views.

    Returns:
        ``pooled [B, D]``, ``probe [B, D_probe]``, ``levels [B, len(levels), D]``, ``tokens
        [B, K, T', H', W', D]`` (``T'`` counts every level's steps when several ``out_layers``
        levels are joined along the tokens), as asked.
    """
    if normalize not in (None, *NORMALIZATIONS):
        raise ValueError(f"normalize={normalize!r}: expected None or one of {NORMALIZATIONS}")
    check_request(model, features, levels)
    encoder, classifier = split_model(model)
    clips = clips[:, None] if clips.dim() == 5 else clips
    batch, count, _, frames, height, width = clips.shape
    captured: dict[int, torch.Tensor] = {}
    hooks = [encoder.blocks[index].register_forward_hook(_capture(captured, index))
             for index in (levels if "levels" in features else ())]  # fmt: skip
    try:
        tokens = encoder(clips.flatten(0, 1))
    finally:
        for hook in hooks:
            hook.remove()
    out: dict[str, torch.Tensor] = {}
    if "pooled" in features:
        out["pooled"] = tokens.float().mean(dim=1).view(batch, count, -1).mean(dim=1)
    if "probe" in features:
        out["probe"] = probe_vectors(classifier, tokens, batch, count, clip_indices, num_views, frames)
    if "levels" in features:
        means = torch.stack([encoder.level_norm(i)(captured[i]).float().mean(dim=1) for i in levels], dim=1)
        out["levels"] = means.view(batch, count, *means.shape[1:]).mean(dim=1)
    if "tokens" in features:
        _, rows, columns = encoder.token_grid(frames, height, width)
        out["tokens"] = tokens.float().reshape(batch, count, -1, rows, columns, tokens.shape[-1])
    if normalize == "l2":
        out = {name: F.normalize(value, dim=-1) for name, value in out.items()}
    return out


def _capture(captured: dict[int, torch.Tensor], index: int):
    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        captured[index] = output

    return hook


def probe_vectors(model: VideoClassifier, tokens: torch.Tensor, batch: int, count: int,
                  clip_indices: torch.Tensor | None, num_views: int, frames: int) -> torch.Tensor:  # fmt: skip
    """The classifier's pooled vector ``[B, D]`` of tokens ``[B * K, N, D]``: per clip and view
    (``average_logits``) or per view over all clips (``concat_tokens``), averaged."""
    if model.clip_aggregation == "concat_tokens":
        if count % num_views:
            raise ValueError(f"{count} clips per video is not a multiple of num_views={num_views}")
        tokens = model.concat_clip_tokens(tokens, batch, count // num_views, num_views, clip_indices, frames)
        count = num_views
    pooled = model.classifier.pool(tokens).float()
    return pooled.view(batch, count, -1).mean(dim=1)
