"""AdamW parameter groups and the step-indexed learning-rate and weight-decay schedules.

Schedules are pure functions of the optimizer step, so a resumed run sets the step and is done:
nothing is replayed and no scheduler state is saved.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from harness.models.family import layer_decay_scale
from harness.parallel.strategy import clean_name  # noqa: F401  (re-exported: used across training/)
from harness.training import protocol as protocols

# Parameters that never get weight decay besides biases and norm weights (any 0/1-dim tensor).
NO_DECAY_NAMES = ("pos_embed", "query_tokens")


def uses_weight_decay(name: str, param: torch.Tensor) -> bool:
    """False for biases, norm weights, position tables and query tokens."""
    return param.ndim > 1 and not any(token in name for token in NO_DECAY_NAMES)


def param_groups(
    model: nn.Module,
    enc_lr_scale: float = 1.0,
    layer_decay: float | None = None,
    decay_all: bool = False,
) -> list[dict]:
    """AdamW groups for a :class:`~harness.models.VideoClassifier`-shaped model.

    Only parameters with ``requires_grad`` are included (a frozen encoder gets no optimizer
    state). Each group carries ``lr_scale`` (``enc_lr_scale`` for encoder parameters, times
    ``layer_decay ** (num_layers - 1 - layer_id)`` when set, both from the encoder's model
    family: :func:`harness.models.family.layer_decay_scale`) and ``wd_scale`` (0 or 1), which
    :meth:`Schedule.apply` multiplies into the scheduled values; the parameters of probe head
    ``i`` of a multi-head classifier (``classifier.heads.i.*``) are grouped with ``head: i``, so
    that each head follows its own schedule (:class:`HeadSchedules`). ``decay_all`` (V-JEPA 2's
    probe protocol) decays every tensor, biases and norms included.
    """
    encoder = model_module(model).encoder
    groups: dict[tuple[float, int, int | None], dict] = {}
    for raw_name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        name = clean_name(raw_name)
        scale = 1.0
        if name.startswith("encoder."):
            inner = name[len("encoder.") :]
            scale = enc_lr_scale
            if layer_decay is not None:
                scale *= layer_decay_scale(encoder, inner, layer_decay)
        wd_scale = 1 if decay_all or uses_weight_decay(name, param) else 0
        empty = {"params": [], "names": [], "lr_scale": scale, "wd_scale": wd_scale}
        head = re.match(r"classifier\.heads\.(\d+)\.", name)
        if head:
            empty["head"] = int(head.group(1))
        group = groups.setdefault((scale, wd_scale, empty.get("head")), empty)
        group["params"].append(param)
        group["names"].append(name)
    return list(groups.values())


def model_module(model: nn.Module) -> nn.Module:
    """The plain model inside DDP/compile wrappers."""
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    return getattr(model, "_orig_mod", model)


def build_optimizer(optimization, model: nn.Module, device: torch.device) -> torch.optim.AdamW:
    """The run's AdamW for ``model`` from an ``optimization`` config section (groups, betas, eps)."""
    from harness.config import ConfigError

    decay_all = protocols.decays_everything(optimization.protocol)
    groups = param_groups(model, optimization.enc_lr_scale, optimization.layer_decay, decay_all)
    if not groups:
        raise ConfigError("no trainable parameters: check meta.finetune_encoder and the model")
    return build_adamw(groups, tuple(optimization.betas), optimization.eps, device)


def build_adamw(
    groups: Iterable[dict], betas: tuple[float, float], eps: float, device: torch.device
) -> torch.optim.AdamW:
    """AdamW over ``groups`` (lr and weight decay are set by the schedule every step)."""
    return torch.optim.AdamW(
        list(groups), lr=0.0, weight_decay=0.0, betas=tuple(betas), eps=eps, fused=device.type == "cuda"
    )


@dataclass(frozen=True)
class Schedule:
    """Warmup-stable-decay learning rate and cosine weight decay, in optimizer steps.

    ``lr``: linear from ``start_lr`` to ``lr`` over ``warmup_steps``, constant, then linear to
    ``final_lr`` over the last ``anneal_steps``; with ``shape="cosine"`` (V-JEPA 2's evaluation
    schedule) a cosine from ``lr`` to ``final_lr`` over all steps after the warmup instead.
    ``wd``: cosine from ``weight_decay`` at step 0 to ``final_weight_decay`` at ``total_steps``.
    ``protocol="vjepa2"``: optimizer step ``i`` uses schedule step ``i + 1`` and both shapes and
    the weight decay are V-JEPA 2's own expressions (:mod:`harness.training.protocol`).
    """

    total_steps: int
    lr: float
    start_lr: float = 0.0
    final_lr: float = 0.0
    warmup_steps: int = 0
    anneal_steps: int = 0
    weight_decay: float = 0.0
    final_weight_decay: float = 0.0
    shape: str = "wsd"
    protocol: str = "harness"

    def lr_at(self, step: int) -> float:
        """Learning rate at schedule step ``step``."""
        if self.protocol == "vjepa2" and self.shape == "cosine":
            return protocols.vjepa2_cosine_lr(
                step, self.warmup_steps, self.start_lr, self.lr, self.final_lr, self.total_steps
            )
        if self.protocol == "vjepa2":
            return protocols.vjepa2_wsd_lr(
                step, self.warmup_steps, self.anneal_steps, self.start_lr, self.lr, self.final_lr, self.total_steps
            )
        if step < self.warmup_steps:
            return self.start_lr + (self.lr - self.start_lr) * step / self.warmup_steps
        if self.shape == "cosine":
            progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
            return self.final_lr + (self.lr - self.final_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
        decay_start = self.total_steps - self.anneal_steps
        if self.anneal_steps and step >= decay_start:
            progress = min(1.0, (step - decay_start) / self.anneal_steps)
            return self.lr + (self.final_lr - self.lr) * progress
        return self.lr

    def wd_at(self, step: int) -> float:
        """Weight decay at schedule step ``step``."""
        if self.protocol == "vjepa2":
            return protocols.vjepa2_cosine_wd(step, self.weight_decay, self.final_weight_decay, self.total_steps)
        progress = min(1.0, step / max(1, self.total_steps))
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.final_weight_decay + (self.weight_decay - self.final_weight_decay) * cosine

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> tuple[float, float]:
        """Set every group's ``lr`` and ``weight_decay`` for optimizer step ``step``; returns the
        base values."""
        at = protocols.schedule_step(self.protocol, step)
        lr, wd = self.lr_at(at), self.wd_at(at)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
            group["weight_decay"] = wd * group.get("wd_scale", 1)
        return lr, wd


class HeadSchedules:
    """The run's :class:`Schedule` plus one per probe head (``optimization.heads``): a group with
    a ``head`` key follows that head's schedule, every other group the run's."""

    def __init__(self, main: Schedule, heads: list[Schedule] | None = None) -> None:
        self.main, self.heads = main, heads or []

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> tuple[float, float]:
        """Set every group's ``lr`` and ``weight_decay`` for optimizer step ``step``; returns the
        run's values."""
        at = protocols.schedule_step(self.main.protocol, step)
        lr, wd = self.main.lr_at(at), self.main.wd_at(at)
        for group in optimizer.param_groups:
            schedule = self.heads[group["head"]] if "head" in group and self.heads else self.main
            group["lr"] = schedule.lr_at(at) * group.get("lr_scale", 1.0)
            group["weight_decay"] = schedule.wd_at(at) * group.get("wd_scale", 1)
        return lr, wd

    def values(self, step: int) -> list[tuple[float, float]]:
        """``(lr, weight decay)`` of every head (or of the run, with one head) at optimizer step
        ``step``, before group scales."""
        at = protocols.schedule_step(self.main.protocol, step)
        return [(schedule.lr_at(at), schedule.wd_at(at)) for schedule in (self.heads or [self.main])]


def build_schedules(opt, steps_per_epoch: int) -> HeadSchedules:
    """Schedules from an ``OptimizationConfig`` (epoch units converted to optimizer steps)."""

    def schedule(values) -> Schedule:
        return Schedule(
            total_steps=opt.epochs * steps_per_epoch,
            lr=values.lr,
            start_lr=values.start_lr,
            final_lr=values.final_lr,
            warmup_steps=protocols.warmup_steps(opt.protocol, values.warmup, steps_per_epoch),
            anneal_steps=protocols.warmup_steps(opt.protocol, opt.anneal, steps_per_epoch),
            weight_decay=values.weight_decay,
            final_weight_decay=values.final_weight_decay,
            shape=opt.lr_schedule,
            protocol=opt.protocol,
        )

    return HeadSchedules(schedule(opt), [schedule(head) for head in opt.heads] if len(opt.heads) > 1 else None)
