"""The probe's vectors of validation videos for an embedding projector (``logging.embedding_projector``):
TensorBoard's PROJECTOR tab and a W&B table with an embedding column (its 2D projection panel).

The vector of a video is what the classifier's final linear layer reads (the ``probe`` feature of
``harness.embed``): the attentive probe's pooled query, or a linear head's pooled token, averaged
over the video's clips and views. It is taken from the evaluation's own forward passes by a hook
on that output (the tensor is only read: no number changes, no extra forward), on the main rank
for its first ``count`` videos, the same ones every evaluation so that the projections of
successive epochs compare; then the hooks come off. With several probe heads every head's vector
is kept and the best head's is logged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from harness.config import Config
from harness.data.listing import names_of_label
from harness.data.loader import ClipBatch
from harness.training.tracking.explained import label_of


@dataclass
class ProjectedVideos:
    """What a dashboard shows: ``vectors`` ``float32 [videos, D]`` and, per video, its path, its
    label's name(s) and the predicted class's name."""

    vectors: np.ndarray
    videos: list[str]
    labels: list[str]
    predicted: list[str]


def pooled_outputs(model: nn.Module) -> list[nn.Module]:
    """Per probe head, the module whose output (attentive pooler) or input (a linear head's dropout)
    is the pooled vector; empty when the classifier is neither."""
    classifier = getattr(model, "classifier", None)
    heads = list(getattr(classifier, "heads", None) or ([classifier] if classifier is not None else []))
    found = []
    for head in heads:
        if hasattr(head, "pooler"):
            found.append(head.pooler)
        elif hasattr(head, "dropout") and hasattr(head, "head"):
            found.append(head.dropout)
        else:
            return []
    return found


class ProjectorSampler:
    """Records the pooled vector of the main rank's first ``count`` validation videos.

    Use :meth:`recording` around the evaluation, pass :meth:`observe` to
    :func:`harness.training.evaluation.evaluate`; then :meth:`projected`.
    """

    def __init__(self, model: nn.Module, count: int, names: list[str], multi_label: bool = False) -> None:
        self.modules, self.count, self.names, self.multi_label = pooled_outputs(model), count, names, multi_label
        self.captured: list[list[torch.Tensor]] = [[] for _ in self.modules]
        self.kept: list[tuple[str, object, torch.Tensor, torch.Tensor]] = []  # video, label, [heads, D], logits
        self._stack: contextlib.ExitStack | None = None

    @staticmethod
    def build(model: nn.Module, config: Config, names: list[str], enabled: bool) -> ProjectorSampler | None:
        """A sampler of ``logging.embedding_projector`` videos when ``enabled`` (the main rank, with
        a dashboard) and above 0, for a classifier with a pooled vector; else None."""
        count = config.logging.embedding_projector
        if not enabled or count <= 0 or not pooled_outputs(model):
            return None
        return ProjectorSampler(model, count, names, config.meta.multi_label)

    def _hook(self, head: int, module: nn.Module):
        def keep(tensor: torch.Tensor) -> None:
            self.captured[head].append(tensor.detach().float().flatten(1).cpu())

        if isinstance(module, nn.Dropout):  # a linear head: the dropout's input is the pooled token
            return module.register_forward_pre_hook(lambda _, args: keep(args[0]))
        return module.register_forward_hook(lambda _, __, output: keep(output))  # pooler: [M, 1, D]

    @contextlib.contextmanager
    def recording(self) -> Iterator[ProjectorSampler]:
        """Hooks on every head while inside, until ``count`` videos are kept."""
        self.kept = []
        with contextlib.ExitStack() as stack:
            for head, module in enumerate(self.modules):
                stack.callback(self._hook(head, module).remove)
            self._stack = stack
            try:
                yield self
            finally:
                self._stack = None

    def observe(self, batch: ClipBatch, logits: torch.Tensor) -> None:
        """After each validation forward: the batch's vectors (its clips and views averaged)."""
        if self._stack is None or not self.captured[0]:
            return
        videos = len(batch.videos)
        # the last capture is this forward's (a discarded lockstep forward may have left one before)
        vectors = torch.stack([c[-1].reshape(videos, -1, c[-1].shape[-1]).mean(1) for c in self.captured], dim=1)
        for captured in self.captured:
            captured.clear()
        logits = logits.detach().float().cpu().view(videos, len(self.modules), -1)
        for index, video in enumerate(batch.videos[: self.count - len(self.kept)]):
            label = label_of(batch, index)
            self.kept.append((video, label, vectors[index].clone(), logits[index].clone()))  # not the batch
        if len(self.kept) >= self.count:
            self._stack.close()  # the hooks come off: the rest of the evaluation pays nothing
            self._stack = None

    def projected(self, head: int | None = None) -> ProjectedVideos | None:
        """The kept videos' vectors of probe head ``head`` (the best; None: the only one)."""
        if not self.kept:
            return None
        head = head or 0
        vectors = np.stack([vector[head].numpy() for _, _, vector, _ in self.kept]).astype(np.float32)
        predicted = [self.names[int(logits[head].argmax())] for _, _, _, logits in self.kept]
        labels = [names_of_label(label, self.names) for _, label, _, _ in self.kept]
        return ProjectedVideos(vectors, [video for video, *_ in self.kept], labels, predicted)
