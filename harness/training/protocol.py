"""Training conventions: the harness's own (``optimization.protocol: harness``) or V-JEPA 2's
frozen-probe protocol step for step (``vjepa2``, set by the V-JEPA 2 eval-file translator).

The two differ only where V-JEPA 2's ``evals/video_classification_frozen/eval.py`` and its
schedulers do something else than we do by default:

* schedules are stepped before each iteration's forward pass, so iteration ``i`` (0-based)
  uses the values of schedule step ``i + 1`` and the last one reaches ``final_lr``;
* warmup (and anneal) steps are ``int(epochs * steps_per_epoch)`` (truncated, not rounded);
* the learning rate is ``max(final_lr, cosine)`` and the weight decay is clamped to its final
  value, with V-JEPA 2's own expression order (bit-identical floats); ``lr_schedule: wsd`` is
  V-JEPA 2's ``WSDSchedule`` (the seed app's fine-tune schedule) in the same way;
* every probe tensor is decayed (biases, LayerNorms, ``query_tokens`` included);
* no gradient clipping, and the training accuracy is the best head's, not the heads' mean.

Whatever the protocol, the heads of a grid never share a gradient statistic: clipping, loss
scaling and non-finite skipping are per head (:mod:`harness.parallel.head_steps`).
"""

from __future__ import annotations

import math

PROTOCOLS = ("harness", "vjepa2")


def schedule_step(protocol: str, step: int) -> int:
    """The schedule step whose values optimizer step ``step`` (0-based) trains with."""
    return step + 1 if protocol == "vjepa2" else step


def warmup_steps(protocol: str, warmup_epochs: float, steps_per_epoch: int) -> int:
    """Warmup (or anneal) epochs in optimizer steps: V-JEPA 2 truncates (``int(7.5) == 7``), the
    harness rounds."""
    steps = warmup_epochs * steps_per_epoch
    return int(steps) if protocol == "vjepa2" else round(steps)


def decays_everything(protocol: str) -> bool:
    """Whether every trained tensor gets weight decay (V-JEPA 2's probe groups)."""
    return protocol == "vjepa2"


def vjepa2_cosine_lr(step: int, warmup: int, start_lr: float, lr: float, final_lr: float, total: int) -> float:
    """V-JEPA 2's warmup-cosine learning rate at schedule step ``step`` (its ``_step``)."""
    if step < warmup:
        progress = float(step) / float(max(1, warmup))
        return start_lr + progress * (lr - start_lr)
    progress = float(step - warmup) / float(max(1, total - warmup))
    return max(final_lr, final_lr + (lr - final_lr) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def vjepa2_wsd_lr(
    step: int, warmup: int, anneal: int, start_lr: float, lr: float, final_lr: float, total: int
) -> float:
    """V-JEPA 2's warmup-stable-decay learning rate at schedule step ``step`` (its ``WSDSchedule``)."""
    if step < warmup:
        progress = float(step) / float(max(1, warmup))
        return start_lr + progress * (lr - start_lr)
    if step < total - anneal:
        return lr
    progress = float(step - (total - anneal)) / float(max(1, anneal))
    return lr + progress * (final_lr - lr)


def vjepa2_cosine_wd(step: int, weight_decay: float, final_weight_decay: float, total: int) -> float:
    """V-JEPA 2's cosine weight decay at schedule step ``step``, clamped to its final value."""
    progress = step / total
    value = final_weight_decay + (weight_decay - final_weight_decay) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if final_weight_decay <= weight_decay:
        return max(final_weight_decay, value)
    return min(final_weight_decay, value)


def best_head_accuracy(protocol: str) -> bool:
    """Whether the training top-1 of a multi-head run is its best head's (V-JEPA 2) or the mean."""
    return protocol == "vjepa2"
