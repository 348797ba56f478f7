"""A few validation videos drawn with the probe's attention, per evaluation
(``logging.explain_videos``), for TensorBoard and W&B.

The evaluation's own forward passes are recorded (:mod:`harness.models.attention_maps`: hooks that
change no number) on the main rank for its first ``count`` videos, the same ones every epoch, so
the pictures show how the probe's attention settles as it trains; then the hooks come off and the
rest of the evaluation runs as without them. Each picture is :func:`harness.data.overlays.strip_image`:
a row of frames per clip and view, the attention of the best probe head drawn over them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from harness.config import Config
from harness.data.listing import names_of_label
from harness.data.loader import ClipBatch
from harness.data.overlays import overlay_video, strip_image
from harness.data.transforms import denormalize_clips
from harness.models.attention_maps import fold_attention, probe_attention, recording_attention


@dataclass
class ExplainedVideo:
    """One picture: ``image`` ``uint8 [H, W, 3]`` and what it shows (``caption``)."""

    video: str
    caption: str
    image: np.ndarray

    @property
    def tag(self) -> str:
        """A short name for the picture (the video's file name without suffix, or its shard key)."""
        return Path(self.video.split("#")[-1]).stem or "video"


def label_of(batch: ClipBatch, index: int) -> int | tuple[int, ...]:
    """The label of video ``index`` of a batch: a class id, or a multi-label batch's ids (its -1 padding dropped)."""
    label = batch.labels[index].tolist()
    return tuple(c for c in label if c >= 0) if isinstance(label, list) else label


class ExplainedSampler:
    """Records the probe's attention on the main rank's first ``count`` validation videos.

    Use :meth:`recording` around the evaluation and pass :meth:`observe` to
    :func:`harness.training.evaluation.evaluate`; then :meth:`pictures`.
    """

    def __init__(
        self, model: nn.Module, count: int, num_views: int, names: list[str], multi_label: bool = False
    ) -> None:
        self.model, self.count, self.num_views = model, count, num_views
        self.names, self.multi_label = names, multi_label
        heads = getattr(model.classifier, "heads", None)
        self.heads = len(heads) if heads is not None else 1
        self.kept: list[tuple[str, object, torch.Tensor, list, torch.Tensor]] = []
        self._stack: contextlib.ExitStack | None = None
        self._recorders: list = []

    @staticmethod
    def build(model: nn.Module, config: Config, names: list[str], enabled: bool) -> ExplainedSampler | None:
        """A sampler of ``logging.explain_videos`` videos when ``enabled`` (the main rank, with a
        dashboard), that is above 0 and the model has an attention probe to show (a linear head has
        none: nothing is drawn), else None."""
        count = config.logging.explain_videos
        if not enabled or count <= 0 or probe_attention(model) is None:
            return None
        return ExplainedSampler(model, count, config.data.num_views, names, config.meta.multi_label)

    @contextlib.contextmanager
    def recording(self) -> Iterator[ExplainedSampler]:
        """Hooks on every probe head while inside, until ``count`` videos are kept."""
        self.kept = []
        with contextlib.ExitStack() as stack:
            self._stack = stack
            self._recorders = [stack.enter_context(recording_attention(self.model, head)) for head in range(self.heads)]
            try:
                yield self
            finally:
                self._stack = None

    def observe(self, batch: ClipBatch, logits: torch.Tensor) -> None:
        """After each validation forward: keep the first videos' frames, logits and attention."""
        if self._stack is None or not self._recorders[0].weights:
            return
        maps = [fold_attention(self.model, recorder.weights[-1], batch.clips.shape, self.num_views)
                for recorder in self._recorders]  # fmt: skip
        for recorder in self._recorders:
            recorder.weights.clear()  # (a discarded lockstep forward leaves one too)
        frames = denormalize_clips(batch.clips.cpu())
        logits = logits.float().cpu().view(len(batch.videos), self.heads, -1)
        for index, video in enumerate(batch.videos[: self.count - len(self.kept)]):
            heat = [m.weights[index].clone() for m in maps]
            label = label_of(batch, index)
            self.kept.append((video, label, frames[index].clone(), heat, logits[index].clone()))  # not the batch
        if len(self.kept) >= self.count:
            self._stack.close()  # the hooks come off: the rest of the evaluation pays nothing
            self._stack = None

    def pictures(self, head: int | None = None) -> list[ExplainedVideo]:
        """The kept videos drawn with the attention of probe head ``head`` (the best one; None: the only one)."""
        names = self.names
        pictures = []
        for video, label, frames, heat, logits in self.kept:
            weights = heat[head or 0]  # [clips, views, T', H', W']
            image = strip_image(overlay_video(frames.numpy(), weights.numpy()))
            scores = logits[head or 0]
            probabilities = scores.sigmoid() if self.multi_label else scores.softmax(-1)
            predicted = int(probabilities.argmax())
            caption = (f"{video}: label {names_of_label(label, names)}, predicted {names[predicted]} "
                       f"({100 * float(probabilities[predicted]):.0f}%)")  # fmt: skip
            pictures.append(ExplainedVideo(video, caption, image))
        return pictures
