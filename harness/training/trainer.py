"""The training loop: small methods over parts built by :mod:`harness.training.assemble`.

The loop talks to devices and processes only through a :class:`~harness.parallel.strategy.
Strategy`, so single-process and distributed runs share every line here.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from harness.config import Config, save_config, to_dict
from harness.core.errors import RunFailed
from harness.core.progress import progress
from harness.data.loader import ClipBatch
from harness.parallel.head_steps import nonfinite_heads
from harness.parallel.strategy import Strategy
from harness.training import assemble
from harness.training.data_parts import ensure_demo_data
from harness.training.evaluation import evaluate, to_model_input, write_eval_artefacts
from harness.training.metrics import EvalResult, RunningSums
from harness.training.protocol import best_head_accuracy
from harness.training.state import run_lock
from harness.training.state.checkpoint import CheckpointManager
from harness.training.state.resume import resume as resume_run
from harness.training.state.resume import save as save_run
from harness.training.state.run_lock import take_run_folder
from harness.training.state.run_state import RunContext, TrainState
from harness.training.state.signals import StopRequest
from harness.training.tracking.explained import ExplainedSampler
from harness.training.tracking.logger import RunLogger, WandbSink
from harness.training.tracking.observability import (
    StallDetector,
    checked_mfu,
    flops_per_clip,
    memory_gb,
    peak_flops,
    tokens_per_clip,
)
from harness.training.tracking.projector import ProjectorSampler
from harness.training.tracking.summary import describe_start, failure, write_final_summary
from harness.training.tracking.tensorboard import TensorBoardSink

log = logging.getLogger(__name__)


class StepResult(NamedTuple):
    """What one optimizer step measured, on the device and not synchronised."""

    loss_sum: torch.Tensor  #: the loss summed over the step's samples (mean over heads)
    hits: torch.Tensor  #: ``[2]``: top-1 and top-5 hits summed over samples (mean over heads)
    count: int  #: samples in the step (0 when the step was skipped)
    grad_norm: torch.Tensor | float | None  #: the gradient norm before clipping (None when skipped)
    head_sums: torch.Tensor | None  #: ``[heads, 2]``: loss sum and top-1 hits per probe head


class Trainer:
    """Fine-tune (or probe) a video classifier as ``config`` says.

    ``Trainer(config).fit()`` builds data, model, optimizer and checkpoints, resumes from the
    run folder when a checkpoint is there, trains, evaluates after every epoch and returns the
    last evaluation.
    """

    def __init__(self, config: Config, strategy: Strategy | None = None) -> None:
        self.config = config
        self.strategy = strategy or assemble.build_strategy_from_config(config)
        self.folder = Path(config.folder)
        self.is_main, self.world_size = self.strategy.is_main, self.strategy.world_size
        take_run_folder(self.folder, self.strategy)
        if self.is_main:
            save_config(config, self.folder / "config.yaml")
            ensure_demo_data(config)
        self.strategy.barrier()
        parts = assemble.assemble_training(config, self.strategy)
        self.train_set, self.val_set = parts.train_set, parts.val_set
        self.num_classes, self.class_names = parts.num_classes, parts.class_names
        self.model, self.optimizer = parts.model, parts.optimizer
        self.train_loader, self.val_loader = parts.train_loader, parts.val_loader
        self.steps_per_epoch, self.schedule = parts.steps_per_epoch, parts.schedule
        self.train_budget, self.val_budget = parts.train_budget, parts.val_budget
        self.objective, self.mixup, self.ema = parts.objective, parts.mixup, parts.ema
        opt = config.optimization
        self.num_heads = max(1, len(opt.heads))
        self.encoder_group = max(1, config.data.encoder_batch_size // config.data.batch_size)  # micro-batches
        self.checkpoints = CheckpointManager(self.folder, self.strategy.rank, self.strategy.barrier)
        self.state = TrainState()
        best = best_head_accuracy(opt.protocol)  # V-JEPA 2 reports the best head's training top-1
        self.window = RunningSums(self.strategy.device, self.num_heads, best)  # since the last log row
        self.epoch_sums = RunningSums(self.strategy.device, self.num_heads, best)  # since the epoch's start
        resumed_from = self.resume()
        self.logger = RunLogger(self.folder, self.strategy.rank, self.state.step if resumed_from else None,
                                heads=self.num_heads, columns=self.objective.eval_columns,
                                resume_epoch=self.state.epoch if resumed_from else None)  # fmt: skip
        encoder = self.strategy.unwrap(self.model).encoder
        self.flops_per_clip = flops_per_clip(encoder, config, config.meta.finetune_encoder)
        self.tokens_per_clip = tokens_per_clip(config)
        self.peak_flops: float | None = None  # measured or looked up at the first log row
        self.stall = StallDetector(config.logging.stall_threshold, config.data.num_workers)
        self.stop = StopRequest(config.checkpointing.save_on_signal)
        self.wandb = self._start_wandb()
        board = TensorBoardSink(self.folder, to_dict(config)) if self.is_main and config.logging.tensorboard else None
        self.dashboards = [sink for sink in (self.wandb, board) if sink is not None]
        describe_start(self.run_context(), (self.train_set, self.val_set), self.parameter_counts(),
                       self.flops_per_clip, resumed_from)  # fmt: skip

    # ----------------------------------------------------------------------------- building
    def parameter_counts(self) -> list[int]:
        """``[total, trained]`` parameters of the whole model, however the strategy shards it."""
        params = list(self.strategy.unwrap(self.model).parameters())
        count = self.strategy.parameter_numel
        return [sum(count(p) for p in params), sum(count(p) for p in params if p.requires_grad)]

    def _start_wandb(self) -> WandbSink | None:
        settings = self.config.logging.wandb
        if not (self.is_main and settings.enabled and settings.mode != "disabled"):
            return None
        if self.state.epoch >= self.config.optimization.epochs and not self.config.meta.eval_only:
            return None  # a finished run rerun: nothing to log, and no empty resumed W&B session
        sink = WandbSink(self.folder, to_dict(self.config), settings.project, settings.entity, settings.name,
                         settings.group, settings.tags, settings.mode, self.state.wandb_run_id)  # fmt: skip
        self.state.wandb_run_id = sink.run_id  # saved with the checkpoints: a resumed job continues the run
        return sink

    def run_context(self) -> RunContext:
        """What saving and resuming touch: the strategy's model and optimizer, and the parts."""
        parts = {"train_state": self.state, "precision": self.strategy.precision, "window": self.window,
                 "epoch_sums": self.epoch_sums, "failure_budget": self.train_budget}  # fmt: skip
        return RunContext(self.config, self.folder, self.strategy, self.model, self.optimizer, self.checkpoints,
                          self.state, parts, self.train_loader, self.ema, self.num_classes, self.class_names,
                          self.steps_per_epoch, self.objective.label_sets)  # fmt: skip

    def resume(self) -> Path | None:
        """Continue from the run folder's latest checkpoint (or ``meta.read_checkpoint``)."""
        return resume_run(self.run_context())

    def save(self, pointers: list[str]) -> Path:
        """Checkpoint everything resumable and point ``pointers`` (``latest``, ``best``...) at it."""
        return save_run(self.run_context(), pointers)

    # -------------------------------------------------------------------------------- train
    def fit(self) -> EvalResult | None:
        """Train the remaining epochs (evaluating after each); returns the last evaluation."""
        if self.config.meta.eval_only:
            result = self.evaluate_epoch(self.state.epoch - 1, write_best=False)
            if problem := failure(self.state):
                raise RunFailed(problem)
            return result
        result, stopped_by = None, None
        if self.state.epoch >= self.config.optimization.epochs:
            log.info("the run in %s has finished all %d epochs; nothing to do", self.folder, self.state.epoch)
        for epoch in range(self.state.epoch, self.config.optimization.epochs):
            stopped_by = self.train_epoch(epoch)
            if stopped_by:
                self.save(["latest"])
                log.warning("stopped by %s at step %d; checkpoints/latest holds it", stopped_by, self.state.step)
                break
            result = self.evaluate_epoch(epoch)
            self.state.epoch, self.state.batch_in_epoch = epoch + 1, 0
            pointers = ["latest"]
            if result is not None and self.state.best_epoch == epoch and self.config.checkpointing.save_best:
                pointers.append("best")
            freq = self.config.meta.save_every_freq
            if freq and (epoch + 1) % freq == 0:
                pointers.append(f"epoch_{epoch + 1:04d}")
            self.save(pointers)
        self.finish(stopped_by)
        return result

    def _batches(self, epoch: int) -> Iterator[ClipBatch]:
        self.train_loader.set_epoch(epoch, start=self.state.batch_in_epoch * self.config.data.batch_size)
        return iter(self.train_loader)

    def train_epoch(self, epoch: int) -> str | None:
        """Run the optimizer steps of ``epoch`` that are not done yet; returns the name of the
        signal that asked to stop (the step in progress is finished first), or None."""
        accumulation = self.config.optimization.accumulation_steps
        log_every = self.config.logging.log_every
        every_steps = self.config.checkpointing.every_steps
        self.model.train()
        batches = self._batches(epoch)
        first = self.state.batch_in_epoch // accumulation
        description = f"epoch {epoch + 1}/{self.config.optimization.epochs}"
        bar = progress(total=self.steps_per_epoch, initial=first, desc=description, unit="step",
                       enabled=self.is_main and self.config.logging.progress_bar)  # fmt: skip
        if first == 0:
            self.window.reset()
            self.epoch_sums.reset()
        self.train_budget.start_epoch(epoch, resumed=first > 0)
        stopped_by = None
        for _ in range(first, self.steps_per_epoch):
            started = time.perf_counter()
            micro_batches = [next(batches) for _ in range(accumulation)]
            data_time = time.perf_counter() - started
            lr, wd = self.schedule.apply(self.optimizer, self.state.step)
            step = self.train_step(micro_batches)
            self.state.step += 1
            self.state.batch_in_epoch += accumulation
            step_time = time.perf_counter() - started
            for sums in (self.window, self.epoch_sums):
                sums.add(step.loss_sum, step.hits, step.count, step.grad_norm, data_time, step_time, step.head_sums)
            bar.update()
            if self.config.meta.sync_gc and self.state.step % 50 == 0:
                gc.collect()  # the seed's sync_gc: collect at the same steps on every rank
            last = self.state.batch_in_epoch == self.steps_per_epoch * accumulation
            if self.state.step % log_every == 0 or last:
                row = self._log_row(epoch, lr, wd)
                if row["loss"] is not None:
                    clips = f"{row['clips_per_s']:.1f}/s"
                    bar.set_postfix(loss=f"{row['loss']:.4f}", acc1=f"{row['acc1']:.3f}", clips=clips)
            if every_steps and self.state.step % every_steps == 0:
                self.save(["latest"])
            # One process checks every step (free); several agree at log rows (tiny all-reduces):
            # on unusable videos over all ranks, and on a stop signal.
            if self.strategy.world_size == 1 or self.state.step % log_every == 0 or last:
                self.train_budget.check(final=last)
                stopped_by = self.stop.agreed(self.strategy)
                if stopped_by:
                    break
        bar.close()
        return stopped_by

    def _log_row(self, epoch: int, lr: float, wd: float) -> dict:
        window = self.window
        if self.peak_flops is None:
            self.peak_flops = peak_flops(self.strategy.device, self.strategy.precision.dtype)
        means = window.means()
        clips = means["count"]
        seconds = max(window.step_time, 1e-9)
        row = {
            "epoch": epoch,
            "step": self.state.step,
            "loss": means["loss"],
            "acc1": means["acc1"],
            "acc5": means["acc5"],
            "lr": lr,
            "wd": wd,
            "grad_norm": float(window.norm) if window.norm is not None else None,
            "data_time": window.data_time / max(window.steps, 1),
            "step_time": window.step_time / max(window.steps, 1),
            "data_wait": window.data_time / seconds,
            "clips_per_s": clips * self.config.data.num_clips / seconds,
            "tokens_per_s": clips * self.config.data.num_clips * self.tokens_per_clip / seconds,
            "mfu": checked_mfu(clips * self.config.data.num_clips * self.flops_per_clip / seconds, self.peak_flops),
            "memory_gb": memory_gb(self.strategy.device),
            "decode_failures": self.train_set.stats()["failed"],
            "skipped_steps": self.state.skipped_steps,
        }
        row |= {key: value for key, value in means.items() if key.startswith(("loss_h", "acc1_h"))}
        self.logger.log_step(row)
        for sink in self.dashboards:
            sink.log({f"train/{k}": v for k, v in row.items() if k not in ("epoch", "step")} | {"epoch": epoch},
                     step=self.state.step)  # fmt: skip
        self.stall.update(row["data_wait"], epoch)
        window.reset()
        return row

    def train_step(self, micro_batches: list[ClipBatch]) -> StepResult:
        """One optimizer step over ``micro_batches``; returns its :class:`StepResult` (on-device
        sums, without synchronising). Heads are trained together:
        the loss is their sum (their parameters are disjoint, so each gets its own gradient), a
        head with a NaN/Inf loss skips its step alone, and the logged loss and accuracies are
        their means (the training top-1 is the best head's under ``protocol: vjepa2``)."""
        strategy, device = self.strategy, self.strategy.device
        loss_sum = torch.zeros((), device=device)
        hits = torch.zeros(2, device=device)
        head_sums = torch.zeros(self.num_heads, 2, device=device)
        count = 0
        finite, dropped = True, set()
        for index, (inputs, labels, targets, indices, stage) in enumerate(self._step_inputs(micro_batches)):
            with strategy.accumulate(self.model, sync=index == len(micro_batches) - 1):
                with strategy.precision.autocast():
                    logits = self.model(inputs, indices, **stage)
                per_head = logits.unbind(1) if logits.dim() == 3 else (logits,)
                losses = torch.stack([self.objective.loss(head, labels, targets) for head in per_head])
                # One host sync per micro-batch: a NaN/Inf loss (on any rank) must not reach the weights;
                # a head's NaN gradients stay in that head (disjoint parameters, frozen encoder: a
                # trained encoder would share them), which then skips alone.
                bad = nonfinite_heads(losses, strategy.all_reduce_sum)
                alone = strategy.skips_per_head and not self.config.meta.finetune_encoder
                if not bad or (alone and len(bad) < self.num_heads):
                    strategy.backward(losses / len(micro_batches))
                    dropped.update(bad)
                else:
                    finite = False
                    strategy.skip_micro_batch(self.model)
            if finite:
                with torch.no_grad():
                    head_hits = torch.stack([torch.stack(self.objective.hits(h.detach(), labels)) for h in per_head])
                    losses = torch.nan_to_num(losses.detach(), nan=0.0, posinf=0.0, neginf=0.0)  # skipped heads
                    loss_sum += losses.mean() * len(labels)
                    hits += head_hits.float().mean(0)
                    head_sums += torch.stack([losses * len(labels), head_hits[:, 0].float()], dim=1)
                count += len(labels)
        if not finite or len(dropped) == self.num_heads:
            return StepResult(self._skip_step(), hits, 0, None, None)
        if dropped:
            log.warning("non-finite loss at step %d in probe heads %s: their step skipped", self.state.step + 1,
                        sorted(dropped))  # fmt: skip
            strategy.drop_heads(self.optimizer, sorted(dropped))
        self.state.nonfinite_streak = 0
        norm = strategy.optimizer_step(self.model, self.optimizer, self.config.optimization.clip_grad)
        if self.ema is not None:
            self.ema.update(strategy.unwrap(self.model))
        return StepResult(loss_sum, hits, count, norm, head_sums)

    def _step_inputs(self, micro_batches: list[ClipBatch]) -> Iterator[tuple]:
        """Each micro-batch on the device as ``(inputs, labels, targets, clip_indices, stage)``:
        its clips (mixed by mixup/cutmix when on) and ``stage = {}``; or, when
        ``data.encoder_batch_size`` groups micro-batches, its share of the tokens of one frozen-
        encoder pass over the group (under ``no_grad``, through the strategy's wrapper; the clips
        are let go) and the ``stage`` arguments that classify them."""
        device, group = self.strategy.device, self.encoder_group
        for start in range(0, len(micro_batches), group):
            chunk = []
            for index, batch in enumerate(micro_batches[start : start + group], start):
                clips = to_model_input(batch.clips, device)
                labels = batch.labels.to(device, non_blocking=True)
                targets = None
                if self.mixup is not None:
                    rng = np.random.default_rng([self.config.meta.seed, self.state.step, index, self.strategy.rank])
                    clips, targets = self.mixup(clips, self.objective.targets(labels), rng)
                chunk.append([clips, labels, targets, batch.clip_indices.to(device, non_blocking=True), {}])
            if group > 1:
                stage = {"stage": "classify", "frames": chunk[0][0].shape[-3]}
                with torch.no_grad(), self.strategy.precision.autocast():
                    joined = self.model(torch.cat([item[0] for item in chunk]), stage="encode")
                for item, tokens in zip(chunk, joined.split([len(item[1]) for item in chunk]), strict=True):
                    item[0], item[4] = tokens, stage
            yield from map(tuple, chunk)

    def _skip_step(self) -> torch.Tensor:
        """Drop a step with a non-finite loss; stop after ``max_nonfinite_steps`` in a row."""
        self.strategy.discard_step(self.optimizer)
        self.state.skipped_steps += 1
        self.state.nonfinite_streak += 1
        limit = self.config.optimization.max_nonfinite_steps
        log.warning("non-finite loss at step %d: step skipped (%d in a row)", self.state.step + 1,
                    self.state.nonfinite_streak)  # fmt: skip
        if self.state.nonfinite_streak >= limit:
            raise RunFailed(
                f"{limit} steps in a row had a NaN/Inf loss (last at step {self.state.step + 1}): lower "
                "optimization.lr, check the data, or use meta.dtype=bfloat16/float32. Nothing was saved after "
                "the last good step: checkpoints/latest is intact"
            )
        return torch.zeros((), device=self.strategy.device)

    # ----------------------------------------------------------------------------- evaluate
    def evaluate_epoch(self, epoch: int, write_best: bool = True) -> EvalResult | None:
        """Evaluate (with EMA weights when on), log, and write artefacts when this epoch is best."""
        if self.val_loader is None:
            return None
        model = self.strategy.unwrap(self.model)
        progress = self.is_main and self.config.logging.progress_bar
        shown = self.is_main and bool(self.dashboards)
        explained = ExplainedSampler.build(model, self.config, self.class_names, shown)
        projector = ProjectorSampler.build(model, self.config, self.class_names, shown)
        samplers = [sampler for sampler in (explained, projector) if sampler is not None]
        if self.ema is not None:
            with self.ema.applied(model, self.strategy.writing_local):
                result, accumulator = self._evaluate(progress, samplers)
        else:
            result, accumulator = self._evaluate(progress, samplers)
        epoch_means = self.epoch_sums.means(self.strategy.all_reduce_sum)
        train = {f"train_{key}": epoch_means[key] for key in ("loss", "acc1", "acc5")}
        self.logger.log_eval({"epoch": epoch, "step": self.state.step, **train, **result.as_dict()})
        failed = self.val_set.stats()["failed"]
        trained = (
            f"train loss {train['train_loss']:.4f}, top-1 {100 * train['train_acc1']:.2f}%; "
            if train["train_loss"] is not None
            else ""
        )
        log.info("epoch %d: %sval %s over %d videos%s", epoch + 1, trained, result.describe(), result.count,
                 f" ({failed} unreadable on this rank, skipped)" if failed else "")  # fmt: skip
        self.state.last_eval = result.as_dict()
        if result.best_head is not None:
            every = " ".join(f"{100 * t:.1f}" for t in result.head_top1)
            log.info("best of %d probe heads: head %d (top-1 %.2f%%; all: %s)", len(result.head_top1),
                     result.best_head, 100 * result.top1, every)  # fmt: skip
        # A model whose validation loss is NaN/Inf is never the best one, whatever its argmax says.
        improved = result.score > self.state.best_top1 and math.isfinite(result.loss)
        if improved and write_best:
            self.state.best_top1, self.state.best_epoch = result.score, epoch
            self.state.best_head = result.best_head
        rows = None
        if improved or not write_best:
            prefix = "best_" if write_best else "eval_"
            _, rows = write_eval_artefacts(result, accumulator, self.strategy, self.folder, prefix, self.class_names)
        metrics = {f"val/{k.removeprefix('val_')}": v for k, v in result.as_dict().items()}
        metrics |= {f"epoch/{k}": v for k, v in train.items()} | {"epoch": epoch}
        pictures = explained.pictures(result.best_head) if explained else []
        projected = projector.projected(result.best_head) if projector else None
        for sink in self.dashboards:
            sink.log_evaluation(self.state.step, metrics, result.confusion, rows,
                                self.config.logging.wandb.thumbnails, self.class_names)  # fmt: skip
            if pictures:
                sink.log_explained(self.state.step, pictures)
            if projected is not None:
                sink.log_embeddings(self.state.step, projected)
        return result

    def _evaluate(self, progress: bool, samplers: list = ()):
        """Evaluate, with ``samplers`` (explained videos, the projector) recording the forwards."""
        self.val_budget.start_epoch(self.state.epoch)

        def observe(batch, logits) -> None:
            for sampler in samplers:
                sampler.observe(batch, logits)

        with contextlib.ExitStack() as stack:
            for sampler in samplers:
                stack.enter_context(sampler.recording())
            outcome = evaluate(self.model, self.val_loader, self.strategy, self.num_classes, progress,
                               num_views=self.config.data.num_views, objective=self.objective,
                               observe=observe if samplers else None)  # fmt: skip
        self.val_budget.check(final=True)  # every validation video tried once over all ranks
        return outcome

    def finish(self, stopped_by: str | None = None) -> None:
        """Summary, W&B run closed, signal handlers restored; a run that learned nothing then
        raises :class:`RunFailed` (everything it wrote stays)."""
        stats = self.train_set.stats() | {"all_ranks": self.train_budget.totals()}
        problem = write_final_summary(self.run_context(), stats, stopped_by)
        if self.wandb and self.config.logging.wandb.log_model and not (stopped_by or problem):
            self.wandb.log_model(self.folder, self.state.best_epoch + 1, self.state.best_top1)
        for sink in self.dashboards:
            sink.finish()
        self.stop.restore()
        run_lock.release(self.folder)
        if problem:
            raise RunFailed(f"{problem} (everything is kept in {self.folder})")
