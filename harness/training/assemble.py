"""The one composition root: from a :class:`~harness.config.Config` to the parts a run uses.

Training (:class:`~harness.training.trainer.Trainer`), evaluation (``harness.evaluate``), the
planner and simulator (``harness.plan``) and ``bench/gpu_check.py`` all build here, so they build
alike: the strategy, then the data (:mod:`harness.training.data_parts`), then the model the way the
strategy holds it (:mod:`harness.training.model_parts`, :func:`prepare_model`), then what training
adds (loaders, schedules, failure budgets, objective, mixup, EMA). This is the only place where
the config tree meets the data, model and parallel packages, which take plain arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader

from harness.config import Config
from harness.data.source import VideoSource
from harness.parallel.build import build_strategy
from harness.parallel.distributed import process_info
from harness.parallel.head_steps import HeadScaler
from harness.parallel.registry import STRATEGY_SPECS, resolve_strategy_name
from harness.parallel.strategy import Strategy
from harness.training.checks import check_eval_only, check_labels, steps_per_epoch
from harness.training.classes import display_names, resolve_class_names
from harness.training.data_budget import FailureBudget, build_budgets
from harness.training.data_parts import build_loaders, build_train_dataset, build_val_dataset, infer_num_classes
from harness.training.label_sets import resolve_label_sets
from harness.training.mixup import Mixup
from harness.training.model_parts import build_model, build_model_deferred, hold_frozen_encoder
from harness.training.objective import Objective, build_objective
from harness.training.optim import HeadSchedules, build_optimizer, build_schedules
from harness.training.state.ema import ModelEMA

__all__ = ["TrainingParts", "assemble_training", "build_model", "build_strategy_from_config", "prepare_model"]


def build_strategy_from_config(config: Config) -> Strategy:
    """Device, precision and strategy for this process (joins the process group when distributed)."""
    dist_cfg = config.distributed
    name = resolve_strategy_name(dist_cfg.strategy, process_info().world_size)
    options = STRATEGY_SPECS[name].options(dist_cfg, config.data, config.optimization)
    strategy = build_strategy(name, config.meta.device, config.meta.dtype, dist_cfg.backend, options)
    heads = len(config.optimization.heads)
    if strategy.precision.scaler is not None and heads > 1:  # float16 grid: one loss scale per head
        strategy.precision.scaler = HeadScaler(heads, strategy.device, strategy.all_reduce_sum)
    return strategy


def prepare_model(
    config: Config,
    strategy: Strategy,
    num_classes: int,
    build_optimizer: Callable[[nn.Module], torch.optim.Optimizer | None] = lambda model: None,
) -> tuple[nn.Module, torch.optim.Optimizer | None]:
    """The model as ``strategy`` holds it, and its optimizer (``build_optimizer`` over the wrapped
    model; none by default, for evaluation). Training, evaluation and the GPU check build it here
    alike: a sharding strategy (:attr:`~harness.parallel.strategy.Strategy.builds_sharded`) gets
    the encoder's blocks on the meta device and materialises only its shards, so no rank ever
    holds the whole model; a frozen pretrained encoder is held in the autocast dtype
    (:func:`~harness.training.model_parts.hold_frozen_encoder`)."""
    if strategy.builds_sharded:
        model, deferred = build_model_deferred(config, num_classes)
    else:
        model, deferred = build_model(config, num_classes), None
    hold_frozen_encoder(model, config, strategy)
    return strategy.prepare(model, build_optimizer, deferred)


@dataclass
class TrainingParts:
    """Everything :func:`assemble_training` builds for the trainer."""

    train_set: VideoSource
    val_set: VideoSource | None
    num_classes: int
    class_names: list[str]  #: a label-set run's: every set's names end to end (``objective.label_sets``)
    model: nn.Module  #: as the strategy holds it (wrapped, sharded)
    optimizer: torch.optim.Optimizer | None
    train_loader: DataLoader
    val_loader: DataLoader | None
    steps_per_epoch: int  #: optimizer steps per epoch on this rank
    schedule: HeadSchedules
    train_budget: FailureBudget
    val_budget: FailureBudget | None
    objective: Objective
    mixup: Mixup | None
    ema: ModelEMA | None


def assemble_training(config: Config, strategy: Strategy) -> TrainingParts:
    """Data, model, optimizer, loaders, schedules, failure budgets, objective, mixup and EMA of a
    training run, in a fixed order (the random state each part draws from is part of a run's
    reproducibility: the model from ``meta.seed`` on every rank, the loaders from ``meta.seed +
    rank``). The run folder must exist (the demo data is written before, by the main rank)."""
    torch.manual_seed(config.meta.seed)  # same initial weights on every rank
    names = resolve_class_names(config)
    train_set = build_train_dataset(config, names)
    val_set = build_val_dataset(config, names)
    check_eval_only(config, val_set)
    sets, set_names = resolve_label_sets(config, train_set) if config.meta.label_sets else (None, None)
    num_classes = sets.total if sets is not None else infer_num_classes(config, train_set, names)
    check_labels(config, num_classes, train_set, val_set, sets)
    opt = config.optimization
    model, optimizer = prepare_model(config, strategy, num_classes,
                                     lambda m: build_optimizer(opt, m, strategy.device))  # fmt: skip
    torch.manual_seed(config.meta.seed + strategy.rank)  # drop path etc. differ per rank
    train_loader, val_loader = build_loaders(config, strategy, train_set, val_set)
    steps = steps_per_epoch(config, train_loader)
    epoch_samples = steps * opt.accumulation_steps * config.data.batch_size * strategy.world_size
    train_budget, val_budget = build_budgets(strategy, train_set, val_set, config.data.max_failure_fraction,
                                             epoch_samples)  # fmt: skip
    counts = train_set.class_counts(num_classes) if opt.class_weights == "auto" else None
    objective = build_objective(config, num_classes, counts, sets)
    mixup = None
    if opt.mixup > 0 or opt.cutmix > 0:
        mixup = Mixup(opt.mixup, opt.cutmix, opt.mixup_prob, opt.mixup_switch_prob)
    ema = ModelEMA(strategy.unwrap(model), opt.ema_decay, strategy.local_tensor) if opt.ema_decay > 0 else None
    return TrainingParts(
        train_set=train_set, val_set=val_set, num_classes=num_classes,
        class_names=set_names if sets is not None else display_names(names, num_classes),
        model=model, optimizer=optimizer, train_loader=train_loader, val_loader=val_loader, steps_per_epoch=steps,
        schedule=build_schedules(opt, steps), train_budget=train_budget, val_budget=val_budget,
        objective=objective, mixup=mixup, ema=ema,
    )  # fmt: skip
