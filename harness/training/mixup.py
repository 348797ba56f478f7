"""Mixup and CutMix on clip batches and their soft targets (the objective makes the targets,
label smoothing folded in: :meth:`harness.training.objective.Objective.targets`)."""

from __future__ import annotations

import numpy as np
import torch


def smooth_one_hot(labels: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """``[B]`` -> ``[B, num_classes]`` targets with ``smoothing`` spread over all classes."""
    off = smoothing / num_classes
    targets = torch.full((len(labels), num_classes), off, device=labels.device)
    return targets.scatter_(1, labels[:, None], 1.0 - smoothing + off)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``-sum(targets * log_softmax(logits))``."""
    return -(targets * logits.float().log_softmax(-1)).sum(-1).mean()


class Mixup:
    """Batch mixing for clips ``[B, num_clips, C, T, H, W]`` (or ``[B, C, T, H, W]``).

    Each batch (with probability ``prob``) is mixed with its reverse: Mixup blends whole clips
    with ``lam ~ Beta(mixup_alpha)``; CutMix pastes one box (the same in every frame and clip)
    with area ``1 - lam``, ``lam ~ Beta(cutmix_alpha)``, and ``lam`` is corrected to the box
    actually pasted. With both on, CutMix is chosen with probability ``switch_prob``.

    Randomness comes from the NumPy generator passed per call, which the trainer derives from
    ``(seed, step)``: a resumed run mixes exactly as an uninterrupted one.
    """

    def __init__(
        self, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0, prob: float = 1.0, switch_prob: float = 0.5
    ) -> None:
        if mixup_alpha <= 0 and cutmix_alpha <= 0:
            raise ValueError("Mixup needs mixup_alpha > 0 or cutmix_alpha > 0")
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha
        self.prob, self.switch_prob = prob, switch_prob

    def __call__(
        self, clips: torch.Tensor, targets: torch.Tensor, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mixed clips (new tensor) and the dense ``[B, num_classes]`` ``targets`` (one-hot or
        multi-hot, smoothed) mixed alike."""
        if rng.random() >= self.prob:
            return clips, targets
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha <= 0 or rng.random() < self.switch_prob)
        if use_cutmix:
            lam = float(rng.beta(self.cutmix_alpha, self.cutmix_alpha))
            height, width = clips.shape[-2:]
            cut_h, cut_w = int(height * np.sqrt(1 - lam)), int(width * np.sqrt(1 - lam))
            cy, cx = int(rng.integers(height)), int(rng.integers(width))
            top, bottom = np.clip([cy - cut_h // 2, cy + cut_h // 2], 0, height)
            left, right = np.clip([cx - cut_w // 2, cx + cut_w // 2], 0, width)
            mixed = clips.clone()
            mixed[..., top:bottom, left:right] = clips.flip(0)[..., top:bottom, left:right]
            lam = 1.0 - (bottom - top) * (right - left) / (height * width)
        else:
            lam = float(rng.beta(self.mixup_alpha, self.mixup_alpha))
            mixed = clips * lam + clips.flip(0) * (1.0 - lam)
        return mixed, targets * lam + targets.flip(0) * (1.0 - lam)
