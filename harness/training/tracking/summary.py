"""What the trainer tells the user at start-up and at the end (console and ``summary.json``)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING

from harness.core.crop import crop_text
from harness.training.objective import best_metric
from harness.training.tracking.observability import tokens_per_clip

if TYPE_CHECKING:
    from harness.data.source import VideoSource
    from harness.training.state.run_state import RunContext, TrainState

log = logging.getLogger("harness.training.trainer")


def dataset_size(dataset) -> str:
    """Videos of a source as text (``streamed`` when its size is unknown)."""
    if dataset is None:
        return "0"
    size = dataset.size()
    return str(size) if size is not None else "streamed"


def describe_start(run: RunContext, sources: tuple[VideoSource, VideoSource | None], counts: list[int],
                   flops_per_clip: float, resumed_from: Path | None) -> None:  # fmt: skip
    """One start-up paragraph: data (training and validation ``sources``), model (``counts``: total
    and trained parameters, whole tensors also under ZeRO-3 / FSDP2), batch, strategy, precision,
    schedule."""
    config = run.config
    data = config.data
    total, trainable = counts
    source = ", ".join(data.shards) if data.shards else ", ".join(data.datasets)
    global_batch = data.batch_size * config.optimization.accumulation_steps * run.strategy.world_size
    from harness.data.decode import resolve_backend

    log.info(
        "data: %s training / %s validation videos from %s; %d classes; clips of %d frames at %s px "
        "(%d tokens), %d per video; decoder %s",
        dataset_size(sources[0]),
        dataset_size(sources[1]),
        source,
        run.num_classes,
        max(data.dataset_fpcs),
        crop_text(data.crop_size),
        tokens_per_clip(config),
        data.num_clips,
        resolve_backend(data.decoder)
        + (
            " (data.decoder=auto: the first installed of torchcodec, decord, pyav)" if data.decoder == "auto" else ""
        ),  # fmt: skip
    )
    sets = run.label_sets
    if sets is not None:
        log.info("label sets: %s (one softmax each over their slice of the %d outputs; loss: their sum)",
                 sets.describe(), run.num_classes)  # fmt: skip
    for where, names in zip(sets.names if sets else [""], sets.split_names(run.class_names) if sets else
                            [run.class_names]):  # fmt: skip
        shown = ", ".join(f"{i} {name}" for i, name in enumerate(names[:12])) + (", ..." if len(names) > 12 else "")
        log.info("classes%s: %s", f" of {where}" if where else "", shown)
    log.info(
        "model: %s, %.1fM parameters (%.1fM trained%s); %.1f GFLOPs per clip per step",
        config.model.model_name,
        total / 1e6,
        trainable / 1e6,
        "" if config.meta.finetune_encoder else ", encoder frozen",
        flops_per_clip / 1e9,
    )
    log.info(
        "run: %s x %d rank(s) on %s, %s; global batch %d (%d per rank x %d accumulation); %d steps per epoch, "
        "%d epochs; folder %s",
        run.strategy.description,
        run.strategy.world_size,
        run.strategy.device,
        run.strategy.precision.name,
        global_batch,
        data.batch_size,
        config.optimization.accumulation_steps,
        run.steps_per_epoch,
        config.optimization.epochs,
        run.folder,
    )
    log.info("protocol: %s", describe_protocol(config.optimization, max(1, len(config.optimization.heads))))
    if resumed_from is not None:
        log.info("resumed from %s at epoch %d, step %d", resumed_from, run.state.epoch, run.state.step)


def describe_protocol(optimization, heads: int) -> str:
    """Which training conventions run (``optimization.protocol``), in one phrase."""
    clip = f"clipping each head to {optimization.clip_grad}" if optimization.clip_grad else "no clipping"
    if optimization.protocol == "vjepa2":
        return (
            f"vjepa2 (V-JEPA 2's probe eval step for step: schedules stepped before the forward, truncated warmup, "
            f"every probe tensor decayed, {clip}, training top-1 of the best of {heads} head(s))"
        )
    return f"harness (schedules at the step's start, rounded warmup, no decay on biases/norms/tokens, {clip})"


def failure(state: TrainState) -> str | None:
    """Why a run that ended produced nothing usable, or None: every optimizer step was skipped for
    a NaN/Inf loss; the run ended on such steps (too few left to reach
    ``optimization.max_nonfinite_steps``) with weights whose validation loss is NaN/Inf; or the
    validation counted no video."""
    if state.step > 0 and state.skipped_steps >= state.step:
        return (
            f"every one of the {state.step} optimizer steps had a NaN/Inf loss and was skipped, so the weights "
            "never changed: lower optimization.lr, check the data, or use meta.dtype=bfloat16/float32"
        )
    val_loss = (state.last_eval or {}).get("val_loss")
    if state.nonfinite_streak and val_loss is not None and not math.isfinite(val_loss):
        return (
            f"the weights diverged: the last {state.nonfinite_streak} optimizer steps had a NaN/Inf loss and were "
            f"skipped (the run ended before optimization.max_nonfinite_steps in a row) and the validation loss is "
            f"{val_loss}: lower optimization.lr, check the data, or use meta.dtype=bfloat16/float32"
        )
    if state.last_eval is not None and not state.last_eval.get("val_count"):
        return "validation counted 0 videos: every validation video was unreadable (see the warnings above)"
    return None


def write_final_summary(run: RunContext, train_stats: dict, stopped_by: str | None = None) -> str | None:
    """Write ``summary.json`` and print where everything is (main rank); returns :func:`failure`.
    ``train_stats``: the training source's decode statistics."""
    problem = failure(run.state)
    if not run.strategy.is_main:
        return problem
    state = run.state
    summary = {
        "folder": str(run.folder.resolve()),
        "finished": stopped_by is None and state.epoch >= run.config.optimization.epochs,
        "failed": problem,
        "stopped_by": stopped_by,
        "epochs": state.epoch,
        "steps": state.step,
        "skipped_nonfinite_steps": state.skipped_steps,
        "best_top1": state.best_top1 if state.best_epoch >= 0 else None,  # the value of best_metric
        "best_metric": best_metric(run.config),  # val_map, a label set's val_top1_<set>, else val_top1
        "best_epoch": state.best_epoch + 1 if state.best_epoch >= 0 else None,
        "last": state.last_eval,
        "train_decode_failures": train_stats,
        "checkpoints": run.checkpoints.pointers(),
        "wandb_run_id": state.wandb_run_id,
    }
    (run.folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    lines = [f"run folder: {summary['folder']}"]
    if stopped_by:
        lines.append(f"stopped by {stopped_by} after step {state.step}: checkpoints/latest holds it; rerun to resume")
    if summary["best_top1"] is not None:
        metric = {"val_map": "mAP", "val_top1": "top-1"}.get(summary["best_metric"], summary["best_metric"])
        metric = "mean top-1 of the label sets" if run.config.meta.label_sets and metric == "top-1" else metric
        lines.append(f"best validation {metric} {100 * summary['best_top1']:.1f}% at epoch {summary['best_epoch']}")
    lines += [
        "  config.yaml              resolved configuration",
        "  log_r{rank}.csv, epochs.csv  per-step logs of each rank, per-epoch train/val metrics",
        _artefacts(run.config),
        "  checkpoints/latest, checkpoints/best  resumable checkpoints (rerun the same command to resume)",
        "  summary.json             this summary (python -m harness.report <folder> draws the curves)",
    ]
    if problem:
        lines.append(f"RUN FAILED: {problem}")
    print("\n".join(lines), flush=True)
    return problem


def _artefacts(config) -> str:
    """The summary's line on the best epoch's artefacts, which depend on the objective."""
    if config.meta.label_sets:
        return ("  best_predictions.csv, best_per_class_<set>.csv  best epoch's predictions (every label set's), "
                "per-class precision/recall/F1/recall@5 of each set")  # fmt: skip
    if config.meta.multi_label:
        return "  best_predictions.csv, best_per_class.csv  best epoch's predictions, per-class AP, precision/recall/F1"
    return ("  best_predictions.csv, best_per_class.csv, best_confusion.csv/.png  best epoch's predictions, "
            "per-class precision/recall/F1, confusion matrix")  # fmt: skip
