"""Run output behind one small interface: console, per-rank CSV step logs, the epoch log, W&B.

Every rank writes its own ``log_r{rank}.csv`` (so a slow or diverging rank is visible); only the
main rank prints and writes ``eval.csv``.
"""

from __future__ import annotations

import csv
import logging
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from harness.data.listing import names_of_label

STEP_COLUMNS = (
    "epoch",
    "step",
    "loss",
    "acc1",
    "acc5",
    "lr",
    "wd",
    "grad_norm",
    "data_time",
    "step_time",
    "data_wait",
    "clips_per_s",
    "tokens_per_s",
    "mfu",
    "memory_gb",
    "decode_failures",
    "skipped_steps",
)
EVAL_COLUMNS = (
    "epoch",
    "step",
    "train_loss",
    "train_acc1",
    "train_acc5",
    "val_top1",
    "val_top5",
    "val_mean_class_acc",
    "val_loss",
    "val_count",
    "val_macro_precision",
    "val_macro_recall",
    "val_macro_f1",
)


def setup_console(level: str, is_main: bool) -> None:
    """Console logging: ``level`` on the main rank, warnings only elsewhere."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_harness", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._harness = True
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()) if is_main else logging.WARNING)


class RunLogger:
    """CSV logs of one rank in the run ``folder``.

    Args:
        folder: run folder.
        rank: this process's rank; rank 0 also writes ``epochs.csv``.
        resume_step: when resuming, rows after this optimizer step are dropped (the resumed
            run writes them again), so the logs read as one uninterrupted run.
        resume_epoch: when resuming, the epoch in progress: its ``epochs.csv`` row, if a killed
            run wrote it before checkpointing the epoch's end, is dropped too (the resumed run
            evaluates that epoch again), so every epoch has one row.
        heads: probe heads; with several, per-head columns follow the common ones
            (``loss_h{i}``, ``acc1_h{i}`` per step; ``val_top1_h{i}`` and ``best_head`` per epoch).
        columns: the objective's own ``epochs.csv`` columns after the common ones (``val_map`` of a
            multi-label run, each label set's ``val_top1_<set>``...:
            :attr:`harness.training.objective.Objective.eval_columns`); ``val_top1_h{i}`` then
            holds each head's ranking metric (mAP, the label sets' chosen top-1).
    """

    def __init__(self, folder: str | Path, rank: int = 0, resume_step: int | None = None, heads: int = 1,
                 columns: tuple[str, ...] = (), resume_epoch: int | None = None) -> None:  # fmt: skip
        self.folder = Path(folder)
        self.rank = rank
        self.step_path = self.folder / f"log_r{rank}.csv"
        self.eval_path = self.folder / "epochs.csv"
        per_head = range(heads if heads > 1 else 0)
        self.step_columns = STEP_COLUMNS + tuple(f"{kind}_h{i}" for i in per_head for kind in ("loss", "acc1"))
        self.eval_columns = EVAL_COLUMNS + tuple(columns)
        self.eval_columns += tuple(f"val_top1_h{i}" for i in per_head)
        self.eval_columns += ("best_head",) if heads > 1 else ()
        self._truncate(self.step_path, self.step_columns, resume_step)
        if rank == 0:
            self._truncate(self.eval_path, self.eval_columns, resume_step, resume_epoch)

    @staticmethod
    def _truncate(
        path: Path, columns: tuple[str, ...], resume_step: int | None, resume_epoch: int | None = None
    ) -> None:
        rows: list[list[str]] = []
        if resume_step is not None and path.exists():
            with open(path, newline="", encoding="utf-8") as handle:
                rows = [row for row in csv.reader(handle)][1:]
            rows = [row for row in rows if row and int(row[1]) <= resume_step]
            if resume_epoch is not None:  # the columns start with epoch, step
                rows = [row for row in rows if int(row[0]) < resume_epoch]
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(columns)
            writer.writerows(rows)

    @staticmethod
    def _append(path: Path, columns: tuple[str, ...], values: dict[str, Any]) -> None:
        with open(path, "a", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerow([_format(values.get(column)) for column in columns])

    def log_step(self, values: dict[str, Any]) -> None:
        """One training row (columns :data:`STEP_COLUMNS`, then any per-head ones)."""
        self._append(self.step_path, self.step_columns, values)

    def log_eval(self, values: dict[str, Any]) -> None:
        """One epoch row (main rank)."""
        if self.rank == 0:
            self._append(self.eval_path, self.eval_columns, values)


def _format(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # full precision: the resume test compares losses bit for bit
    return str(value)


def wandb_mode(requested: str) -> str:
    """``auto``: online when an API key is configured (env or ~/.netrc), else offline."""
    if requested != "auto":
        return requested
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE") == "online":
        return "online"
    netrc = Path.home() / ".netrc"
    if netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore"):
        return "online"
    return "offline"


class WandbSink:
    """Weights & Biases on the main rank: the resolved config is the run config; ``run_id``
    continues an earlier run (a resumed or requeued job); offline runs sync later with
    ``wandb sync <folder>/wandb/offline-run-*``.
    """

    def __init__(
        self,
        folder: Path,
        config: dict[str, Any],
        project: str,
        entity: str | None,
        name: str | None,
        group: str | None,
        tags: list[str],
        mode: str,
        run_id: str | None,
    ) -> None:
        # W&B stages table images and artifacts in ~/.local/share/wandb and writes its debug logs
        # to ~/.cache/wandb: keep both with the run (an offline run is synced from there later).
        os.environ["WANDB_DATA_DIR"] = str(folder / "wandb" / "data")
        os.environ["WANDB_CACHE_DIR"] = str(folder / "wandb" / "cache")
        import wandb

        self.wandb = wandb
        resolved = wandb_mode(mode)
        self.run = wandb.init(
            project=project,
            entity=entity,
            name=name or folder.name,
            group=group,
            tags=tags or None,
            config=config,
            dir=str(folder),
            id=run_id,
            resume="allow" if run_id else None,
            mode=resolved,
        )
        self.run_id = self.run.id
        # The run's summary holds the best validation accuracy and loss, not the last epoch's.
        best = {"val/top1": "max", "val/top5": "max", "val/mean_class_acc": "max", "val/map": "max", "val/loss": "min"}
        for key, summary in best.items():
            self.run.define_metric(key, summary=summary)
        logging.getLogger(__name__).info("W&B run %s (%s) in %s", self.run_id, resolved, folder / "wandb")

    def log(self, values: dict[str, Any], step: int) -> None:
        """Scalars at optimizer step ``step``."""
        self.run.log({k: v for k, v in values.items() if v is not None}, step=step)

    def log_evaluation(
        self,
        step: int,
        metrics: dict[str, float],
        confusion,
        predictions: list[tuple[str, int, list[int], list[float]]] | None,
        thumbnails: int,
        names: list[str],
    ) -> None:
        """Validation metrics, W&B's confusion-matrix plot and a per-class accuracy chart (both
        with class ``names``; single-label runs), and a sample of predictions (with a thumbnail of
        the middle frame for video files)."""
        wandb = self.wandb
        values: dict[str, Any] = dict(metrics)
        if confusion is not None:
            values |= self._confusion_charts(confusion, names)
        if predictions:
            rows = []
            for video, label, top, scores in predictions[:thumbnails]:
                rows.append([video, names_of_label(label, names), names[top[0]], scores[0], _thumbnail(wandb, video)])
            values["val/predictions"] = wandb.Table(columns=["video", "label", "pred", "score", "frame"], data=rows)
        self.run.log(values, step=step)

    def log_explained(self, step: int, pictures: list) -> None:
        """Validation videos drawn with the probe's attention (``ExplainedVideo``, :mod:`.explained`),
        as ``val/explained``: a list of captioned images at ``step``."""
        images = [self.wandb.Image(picture.image, caption=picture.caption) for picture in pictures]
        self.run.log({"val/explained": images}, step=step)

    def log_embeddings(self, step: int, projected) -> None:
        """Validation videos' probe vectors (``ProjectedVideos``, :mod:`.projector`) as the table
        ``val/embeddings`` (video, label, predicted, embedding): W&B projects its embedding column
        in 2D (PCA, t-SNE, UMAP) with the other columns to colour by."""
        rows = [[video, label, predicted, vector.tolist()] for video, label, predicted, vector
                in zip(projected.videos, projected.labels, projected.predicted, projected.vectors)]  # fmt: skip
        table = self.wandb.Table(columns=["video", "label", "predicted", "embedding"], data=rows)
        self.run.log({"val/embeddings": table}, step=step)

    def _confusion_charts(self, confusion, names: list[str]) -> dict[str, Any]:
        wandb = self.wandb
        counts = np.asarray(confusion.tolist(), dtype=np.int64)
        # W&B's plot takes one (true, predicted) pair per video: expand the counts.
        true, predicted = np.nonzero(counts)
        repeats = counts[true, predicted]
        values: dict[str, Any] = {}
        values["val/confusion"] = wandb.plot.confusion_matrix(
            y_true=np.repeat(true, repeats).tolist(), preds=np.repeat(predicted, repeats).tolist(),
            class_names=list(names), title="validation confusion matrix",
        )  # fmt: skip
        support = counts.sum(1)
        per_class = wandb.Table(columns=["class", "accuracy"], data=[
            [names[c], counts[c, c] / support[c]] for c in range(len(names)) if support[c]
        ])  # fmt: skip
        values["val/per_class_accuracy"] = wandb.plot.bar(per_class, "class", "accuracy", title="per-class accuracy")
        return values

    def log_model(self, run_folder: Path, best_epoch: int, best_top1: float) -> Path | None:
        """Consolidate ``checkpoints/best`` of ``run_folder`` into ``run_folder/best_model`` and
        upload it as the run's ``model-<run id>`` artifact (aliases ``best``, ``epoch-N``; an
        offline run uploads it with ``wandb sync``). Returns the folder, or None without a best."""
        if not (run_folder / "checkpoints" / "best").exists():
            logging.getLogger(__name__).warning("logging.wandb.log_model: no checkpoints/best to upload")
            return None
        from harness.export.consolidate import consolidate

        out = consolidate(run_folder / "checkpoints" / "best", run_folder / "best_model")
        artifact = self.wandb.Artifact(f"model-{self.run_id}", type="model",
                                       metadata={"epoch": best_epoch, "val_top1": best_top1})  # fmt: skip
        artifact.add_dir(str(out))
        self.run.log_artifact(artifact, aliases=["best", f"epoch-{best_epoch}"])
        return out

    def finish(self) -> None:
        """Close the run and stop W&B's service process.

        ``run.finish()`` returns before the service has written the offline run file to disk;
        ``teardown`` waits for it, so the file is complete when the job exits (or is requeued).
        """
        import wandb

        self.run.finish()
        wandb.teardown()


def _thumbnail(wandb, video: str):
    """The middle frame of a video file (or frame folder) as a W&B image (None for shard samples)."""
    if "#" in video or not Path(video).exists():
        return None
    from harness.data.decode import open_video

    try:
        reader = open_video(video)
        frame = reader.get_frames(np.array([reader.num_frames // 2]))[0].numpy()
        reader.close()
    except Exception:  # a thumbnail is decoration: never fail the run for it
        return None
    return wandb.Image(frame)
