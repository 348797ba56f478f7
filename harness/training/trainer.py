"""The training loop: small methods over parts built by :mod:`harness.training.build`.

The loop talks to devices and processes only through a :class:`~harness.parallel.strategy.
Strategy`, so single-process and distributed runs share every line here.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from harness.config import Config, save_config, to_dict
from harness.data.loader import ClipBatch
from harness.fileio import write_atomic
from harness.logger import RunLogger
from harness.parallel.strategy import Strategy
from harness.training import build
from harness.training.checkpoint import (
    META_FILE,
    CheckpointManager,
    checkpoint_name,
    read_checkpoint_meta,
    resolve_checkpoint,
)
from harness.training.ema import ModelEMA
from harness.training.evaluation import evaluate, to_model_input, write_eval_artefacts
from harness.training.metrics import EvalResult, topk_correct
from harness.training.mixup import Mixup, soft_cross_entropy
from harness.training.optim import Schedule, build_adamw, param_groups

log = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainState:
    """Where the run is; with the RNG and the model/optimizer state, all a resume needs."""

    epoch: int = 0  #: epoch in progress (0-based)
    step: int = 0  #: optimizer steps done
    batch_in_epoch: int = 0  #: micro-batches of this rank consumed in ``epoch``
    best_top1: float = -1.0
    best_epoch: int = -1
    last_eval: dict | None = None  #: metrics of the latest evaluation


class Trainer:
    """Fine-tune (or probe) a video classifier as ``config`` says.

    ``Trainer(config).fit()`` builds data, model, optimizer and checkpoints, resumes from the
    run folder when a checkpoint is there, trains, evaluates after every epoch and returns the
    last evaluation.
    """

    def __init__(self, config: Config, strategy: Strategy | None = None) -> None:
        self.config = config
        self.strategy = strategy or build.build_strategy_from_config(config)
        self.folder = Path(config.folder)
        self.is_main = self.strategy.is_main
        if self.is_main:
            self.folder.mkdir(parents=True, exist_ok=True)
            save_config(config, self.folder / "config.yaml")
            build.ensure_demo_data(config)
        self.strategy.barrier()
        torch.manual_seed(config.meta.seed)  # same initial weights on every rank
        self.train_set = build.build_train_dataset(config)
        self.val_set = build.build_val_dataset(config)
        self.num_classes = build.infer_num_classes(config, self.train_set)
        self.model, self.optimizer = self.strategy.prepare(
            build.build_model(config, self.num_classes), self._build_optimizer
        )
        torch.manual_seed(config.meta.seed + self.strategy.rank)  # drop path etc. differ per rank
        self.train_loader, self.val_loader = build.build_loaders(config, self.strategy, self.train_set, self.val_set)
        opt = config.optimization
        self.steps_per_epoch = self._steps_per_epoch()
        total = opt.epochs * self.steps_per_epoch
        self.schedule = Schedule(
            total_steps=total,
            lr=opt.lr,
            start_lr=opt.start_lr,
            final_lr=opt.final_lr,
            warmup_steps=round(opt.warmup * self.steps_per_epoch),
            anneal_steps=round(opt.anneal * self.steps_per_epoch),
            weight_decay=opt.weight_decay,
            final_weight_decay=opt.final_weight_decay,
        )
        self.mixup = None
        if opt.mixup > 0 or opt.cutmix > 0:
            self.mixup = Mixup(
                self.num_classes, opt.mixup, opt.cutmix, opt.mixup_prob, opt.mixup_switch_prob, opt.label_smoothing
            )
        self.ema = ModelEMA(self.strategy.unwrap(self.model), opt.ema_decay) if opt.ema_decay > 0 else None
        self.checkpoints = CheckpointManager(self.folder, self.strategy.rank, self.strategy.barrier)
        self.state = TrainState()
        self.window = RunningSums(self.strategy.device)  # since the last log row
        self.epoch_sums = RunningSums(self.strategy.device)  # since the start of the epoch
        resumed_from = self.resume()
        self.logger = RunLogger(self.folder, self.strategy.rank, self.state.step if resumed_from else None)
        self._describe(resumed_from)

    # ----------------------------------------------------------------------------- building
    def _build_optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        opt = self.config.optimization
        groups = param_groups(model, opt.enc_lr_scale, opt.layer_decay)
        if not groups:
            raise RuntimeError("no trainable parameters: check meta.finetune_encoder and the model")
        return build_adamw(groups, tuple(opt.betas), opt.eps, self.strategy.device)

    def _steps_per_epoch(self) -> int:
        self.train_loader.set_epoch(0)
        batches = len(self.train_loader)
        steps = batches // self.config.optimization.accumulation_steps
        if steps < 1:
            raise RuntimeError(
                f"an epoch has {batches} batches of {self.config.data.batch_size} on this rank, fewer than "
                f"optimization.accumulation_steps={self.config.optimization.accumulation_steps}: "
                "use a smaller data.batch_size or more data"
            )
        return steps

    def _describe(self, resumed_from: Path | None) -> None:
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in self.model.parameters())
        log.info(
            "%s training / %s validation videos, %d classes; %.1fM parameters (%.1fM trained); "
            "%d steps per epoch, %d epochs; %s on %s, %s",
            _size(self.train_set),
            _size(self.val_set),
            self.num_classes,
            total / 1e6,
            trainable / 1e6,
            self.steps_per_epoch,
            self.config.optimization.epochs,
            self.strategy.name,
            self.strategy.device,
            self.strategy.precision.name,
        )
        if resumed_from is not None:
            log.info("resumed from %s at epoch %d, step %d", resumed_from, self.state.epoch, self.state.step)

    # ------------------------------------------------------------------------------- resume
    def resume(self) -> Path | None:
        """Load ``meta.read_checkpoint``, else the run folder's ``latest`` (when
        ``meta.load_checkpoint``); returns the checkpoint used or None for a fresh start."""
        meta = self.config.meta
        if meta.read_checkpoint:
            path = resolve_checkpoint(meta.read_checkpoint)
        elif meta.load_checkpoint:
            path = self.checkpoints.find("latest")
        else:
            path = None
        if path is None:
            return None
        self._check_resumable(path)
        extra = self.strategy.load_state(path, self.model, self.optimizer)
        self.state = TrainState(**extra["train_state"])
        self.strategy.precision.load_state_dict(extra.get("precision", {}))
        if self.ema is not None and extra.get("ema") is not None:
            self.ema.load_state_dict(extra["ema"])
        self.window.load_state_dict(extra["window"])
        self.epoch_sums.load_state_dict(extra["epoch_sums"])
        rank_state = self.checkpoints.restore_rank_state(path)
        if rank_state and rank_state.get("data") and hasattr(self.train_loader, "load_state_dict"):
            self.train_loader.load_state_dict(rank_state["data"])
        self._warn_config_changes(extra.get("config", {}))
        return path

    def _check_resumable(self, path: Path) -> None:
        meta = read_checkpoint_meta(path)
        hint = (
            f"consolidate it (python -m harness.consolidate {path} OUT) and start a new run from "
            "OUT/model.safetensors as meta.pretrain_checkpoint, or resume with the saved setting"
        )
        if meta["strategy"] != self.strategy.name and {meta["strategy"], self.strategy.name} != {"single", "ddp"}:
            raise RuntimeError(
                f"{path} was written by distributed.strategy={meta['strategy']}, this run uses "
                f"{self.strategy.name}: the formats differ; {hint}"
            )
        if self.strategy.name == "deepspeed" and meta["world_size"] != self.strategy.world_size:
            raise RuntimeError(
                f"{path} is a DeepSpeed checkpoint of {meta['world_size']} ranks and this run has "
                f"{self.strategy.world_size}: ZeRO partitions do not reshard on load; {hint} (or convert it "
                "with DeepSpeed's ds_to_universal.py and load it as a universal checkpoint)"
            )

    def _warn_config_changes(self, saved: dict) -> None:
        current = to_dict(self.config)
        for section, values in saved.items():
            if not isinstance(values, dict):
                continue
            for key, value in values.items():
                now = current.get(section, {}).get(key)
                if now != value:
                    log.warning("resuming with %s.%s=%r (the checkpoint used %r)", section, key, now, value)

    def save(self, pointers: list[str]) -> Path:
        """Checkpoint everything resumable and point ``pointers`` at it."""
        extra = {
            "train_state": dataclasses.asdict(self.state),
            "precision": self.strategy.precision.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "window": self.window.state_dict(),
            "epoch_sums": self.epoch_sums.state_dict(),
            "config": to_dict(self.config),
        }
        # A frozen encoder that came from a file is not saved again (it is reloaded from there).
        trainable_only = not self.config.meta.finetune_encoder and bool(self.config.meta.pretrain_checkpoint)
        meta = {
            "strategy": self.strategy.name,
            "world_size": self.strategy.world_size,
            "epoch": self.state.epoch,
            "step": self.state.step,
            "num_classes": self.num_classes,
            "trainable_only": trainable_only,
            "config": to_dict(self.config),
        }

        def write(folder: Path) -> None:
            self.strategy.save_state(folder, self.model, self.optimizer, extra, trainable_only)
            if self.is_main:
                write_atomic(folder / META_FILE, lambda handle: handle.write(json.dumps(meta, indent=2).encode()))

        data = self.train_loader.state_dict() if hasattr(self.train_loader, "state_dict") else None
        return self.checkpoints.save(
            checkpoint_name(self.state.epoch, self.state.step), write, pointers, rank_state={"data": data}
        )

    # -------------------------------------------------------------------------------- train
    def fit(self) -> EvalResult | None:
        """Train the remaining epochs (evaluating after each); returns the last evaluation."""
        if self.config.meta.eval_only:
            return self.evaluate_epoch(self.state.epoch - 1, write_best=False)
        result = None
        if self.state.epoch >= self.config.optimization.epochs:
            log.info("the run in %s has finished all %d epochs; nothing to do", self.folder, self.state.epoch)
        for epoch in range(self.state.epoch, self.config.optimization.epochs):
            self.train_epoch(epoch)
            result = self.evaluate_epoch(epoch)
            self.state.epoch, self.state.batch_in_epoch = epoch + 1, 0
            pointers = ["latest"]
            if result is not None and self.state.best_epoch == epoch and self.config.checkpointing.save_best:
                pointers.append("best")
            freq = self.config.meta.save_every_freq
            if freq and (epoch + 1) % freq == 0:
                pointers.append(f"epoch_{epoch + 1:04d}")
            self.save(pointers)
        self.finish()
        return result

    def _batches(self, epoch: int) -> Iterator[ClipBatch]:
        self.train_loader.set_epoch(epoch, start=self.state.batch_in_epoch * self.config.data.batch_size)
        return iter(self.train_loader)

    def train_epoch(self, epoch: int) -> None:
        """Run the optimizer steps of ``epoch`` that are not done yet."""
        accumulation = self.config.optimization.accumulation_steps
        log_every = self.config.logging.log_every
        every_steps = self.config.checkpointing.every_steps
        self.model.train()
        batches = self._batches(epoch)
        first = self.state.batch_in_epoch // accumulation
        bar = tqdm(
            total=self.steps_per_epoch,
            initial=first,
            desc=f"epoch {epoch + 1}/{self.config.optimization.epochs}",
            unit="step",
            disable=not (self.is_main and self.config.logging.progress_bar),
        )
        if first == 0:
            self.window.reset()
            self.epoch_sums.reset()
        for _ in range(first, self.steps_per_epoch):
            started = time.perf_counter()
            micro_batches = [next(batches) for _ in range(accumulation)]
            data_time = time.perf_counter() - started
            lr, wd = self.schedule.apply(self.optimizer, self.state.step)
            step = self.train_step(micro_batches)
            self.state.step += 1
            self.state.batch_in_epoch += accumulation
            step_time = time.perf_counter() - started
            self.window.add(*step, data_time, step_time)
            self.epoch_sums.add(*step, data_time, step_time)
            bar.update()
            if self.state.step % log_every == 0 or self.state.batch_in_epoch == self.steps_per_epoch * accumulation:
                row = self._log_row(epoch, lr, wd)
                bar.set_postfix(loss=f"{row['loss']:.4f}", acc1=f"{row['acc1']:.3f}", lr=f"{lr:.2e}")
            if every_steps and self.state.step % every_steps == 0:
                self.save(["latest"])
        bar.close()

    def _log_row(self, epoch: int, lr: float, wd: float) -> dict:
        window = self.window
        row = {"epoch": epoch, "step": self.state.step, **window.means(), "lr": lr, "wd": wd}
        check_finite(row["loss"], epoch, self.state.step)
        row["grad_norm"] = float(window.norm) if window.norm is not None else None
        row["data_time"] = window.data_time / max(window.steps, 1)
        row["step_time"] = window.step_time / max(window.steps, 1)
        self.logger.log_step(row)
        window.reset()
        return row

    def train_step(self, micro_batches: list[ClipBatch]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, object]:
        """One optimizer step over ``micro_batches``; returns on-device sums (loss, top-1,
        top-5 hits), the sample count and the gradient norm, without synchronising."""
        strategy, device = self.strategy, self.strategy.device
        loss_sum = torch.zeros((), device=device)
        hits = torch.zeros(2, device=device)
        count = 0
        for index, batch in enumerate(micro_batches):
            clips = to_model_input(batch.clips, device)
            labels = batch.labels.to(device, non_blocking=True)
            targets = None
            if self.mixup is not None:
                rng = np.random.default_rng([self.config.meta.seed, self.state.step, index, strategy.rank])
                clips, targets = self.mixup(clips, labels, rng)
            with strategy.accumulate(self.model, sync=index == len(micro_batches) - 1):
                with strategy.precision.autocast():
                    logits = self.model(clips)
                loss = self.loss(logits, labels, targets)
                strategy.backward(loss / len(micro_batches))
            loss_sum += loss.detach() * len(labels)
            hits += torch.stack(topk_correct(logits.detach(), labels, (1, 5))).float()
            count += len(labels)
        norm = strategy.optimizer_step(self.model, self.optimizer, self.config.optimization.clip_grad)
        if self.ema is not None:
            self.ema.update(strategy.unwrap(self.model))
        return loss_sum, hits, count, norm

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
        """Cross-entropy in fp32, against soft targets when the batch was mixed."""
        if targets is not None:
            return soft_cross_entropy(logits, targets)
        return F.cross_entropy(logits.float(), labels, label_smoothing=self.config.optimization.label_smoothing)

    # ----------------------------------------------------------------------------- evaluate
    def evaluate_epoch(self, epoch: int, write_best: bool = True) -> EvalResult | None:
        """Evaluate (with EMA weights when on), log, and write artefacts when this epoch is best."""
        if self.val_loader is None:
            return None
        model = self.strategy.unwrap(self.model)
        progress = self.is_main and self.config.logging.progress_bar
        if self.ema is not None:
            with self.ema.applied(model):
                result, accumulator = evaluate(self.model, self.val_loader, self.strategy, self.num_classes, progress)
        else:
            result, accumulator = evaluate(self.model, self.val_loader, self.strategy, self.num_classes, progress)
        train = {f"train_{key}": value for key, value in self.epoch_sums.means(self.strategy.all_reduce_sum).items()}
        self.logger.log_eval({"epoch": epoch, "step": self.state.step, **train, **result.as_dict()})
        failed = self.val_set.stats()["failed"]
        log.info(
            "epoch %d: train loss %.4f, top-1 %.2f%%; val top-1 %.2f%%, top-5 %.2f%%, mean class %.2f%% "
            "over %d videos%s",
            epoch + 1,
            train["train_loss"],
            100 * train["train_acc1"],
            100 * result.top1,
            100 * result.top5,
            100 * result.mean_class_accuracy,
            result.count,
            f" ({failed} unreadable on this rank, skipped)" if failed else "",
        )
        self.state.last_eval = result.as_dict()
        improved = result.top1 > self.state.best_top1
        if improved and write_best:
            self.state.best_top1, self.state.best_epoch = result.top1, epoch
        if improved or not write_best:
            prefix = "best_" if write_best else "eval_"
            write_eval_artefacts(result, accumulator, self.strategy, self.folder, prefix)
        return result

    def finish(self) -> None:
        """Write ``summary.json`` and print where everything is."""
        if not self.is_main:
            return
        summary = {
            "folder": str(self.folder.resolve()),
            "epochs": self.state.epoch,
            "steps": self.state.step,
            "best_top1": self.state.best_top1 if self.state.best_epoch >= 0 else None,
            "best_epoch": self.state.best_epoch + 1 if self.state.best_epoch >= 0 else None,
            "last": self.state.last_eval,
            "train_decode_failures": self.train_set.stats(),
            "checkpoints": self.checkpoints.pointers(),
        }
        (self.folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        lines = [f"run folder: {summary['folder']}"]
        if summary["best_top1"] is not None:
            lines.append(f"best validation top-1 {100 * summary['best_top1']:.1f}% at epoch {summary['best_epoch']}")
        lines += [
            "  config.yaml              resolved configuration",
            "  log_r{rank}.csv, epochs.csv  per-step logs of each rank, per-epoch train/val metrics",
            "  best_predictions.csv, best_confusion.csv/.png  best epoch's predictions and confusion matrix",
            "  checkpoints/latest, checkpoints/best  resumable checkpoints (rerun the same command to resume)",
            "  summary.json             this summary",
        ]
        print("\n".join(lines), flush=True)


def _size(dataset) -> str:
    if dataset is None:
        return "0"
    if hasattr(dataset, "__len__"):
        return str(len(dataset))
    total = dataset.total_samples() if hasattr(dataset, "total_samples") else None
    return f"{total} (shards)" if total is not None else "streamed"


class RunningSums:
    """On-device sums of loss, top-1/top-5 hits and samples over a stretch of steps.

    Read with one host sync (per log row or epoch), not per step; saved in checkpoints so that a
    resumed run's log rows and epoch averages equal an uninterrupted run's.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.reset()

    def reset(self) -> None:
        """Start a new stretch."""
        self.sums = torch.zeros(4, dtype=torch.float64, device=self.device)  # loss, top-1, top-5, count
        self.norm = None
        self.data_time = self.step_time = 0.0
        self.steps = 0

    def add(self, loss_sum: torch.Tensor, hits: torch.Tensor, count: int, norm, data_time: float, step_time: float):
        """Add one optimizer step (tensors stay on the device)."""
        self.sums[0] += loss_sum
        self.sums[1:3] += hits
        self.sums[3] += count
        self.norm = norm
        self.data_time += data_time
        self.step_time += step_time
        self.steps += 1

    def means(self, all_reduce=None) -> dict[str, float]:
        """Mean loss and accuracies (one host sync); over all ranks when given ``all_reduce``."""
        sums = all_reduce(self.sums.clone()) if all_reduce is not None else self.sums
        loss_sum, top1, top5, count = sums.tolist()
        count = max(count, 1.0)
        return {"loss": loss_sum / count, "acc1": top1 / count, "acc5": top5 / count}

    def state_dict(self) -> dict:
        """Plain values for a checkpoint."""
        return {
            "sums": self.sums.tolist(),
            "norm": float(self.norm) if self.norm is not None else None,
            "times": [self.data_time, self.step_time, self.steps],
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        self.sums = torch.tensor(state["sums"], dtype=torch.float64, device=self.device)
        self.norm = state["norm"]
        self.data_time, self.step_time, self.steps = state["times"]


def check_finite(loss: float, epoch: int, step: int) -> None:
    """Stop with advice when the training loss is NaN or infinite."""
    if not math.isfinite(loss):
        raise FloatingPointError(
            f"training loss is {loss} at epoch {epoch + 1}, step {step}: lower optimization.lr, check the "
            "data, or use meta.dtype=bfloat16/float32; the last good checkpoint is checkpoints/latest"
        )
