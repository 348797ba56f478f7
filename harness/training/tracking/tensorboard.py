"""TensorBoard on the main rank (``logging.tensorboard: true``): ``<folder>/tensorboard``.

The same scalars as the CSV files and W&B (``train/*`` every ``log_every`` steps, ``val/*`` and
``epoch/*`` per evaluation), the validation confusion matrix as an image per evaluation (with
class names), the resolved config as text, and at the end the flattened hyperparameters with the
best validation top-1/top-5 (TensorBoard's HPARAMS tab); with ``logging.explain_videos`` and
``logging.embedding_projector``, explained videos and the probe's vectors (PROJECTOR tab). Works
offline: ``tensorboard --logdir runs/``. Same interface as :class:`harness.training.tracking.logger.WandbSink`.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np


def flat_hyperparameters(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optimization.lr": 1e-4, ...}``: scalars and strings of a nested config; lists as text."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat |= flat_hyperparameters(value, f"{name}.")
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        elif value is not None:
            flat[name] = str(value)
    return flat


class TensorBoardSink:
    """Writes the run's scalars, confusion images and hyperparameters as TensorBoard events."""

    def __init__(self, folder: Path, config: dict[str, Any]) -> None:
        import yaml
        from torch.utils.tensorboard import SummaryWriter

        self.folder = Path(folder) / "tensorboard"
        self.writer = SummaryWriter(str(self.folder))
        self.hyperparameters = flat_hyperparameters(config)
        self.best: dict[str, float] = {}
        self.writer.add_text("config", "```\n" + yaml.safe_dump(config, sort_keys=False) + "```", 0)

    def log(self, values: dict[str, Any], step: int) -> None:
        """Scalars at optimizer step ``step``."""
        for key, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                self.writer.add_scalar(key, value, step)

    def log_evaluation(self, step: int, metrics: dict[str, float], confusion, predictions, thumbnails: int,
                       names: list[str]) -> None:  # fmt: skip
        """Validation scalars and the confusion matrix as an image (rows normalised, names on the axes)."""
        from PIL import Image

        from harness.training.confusion import plot_confusion

        self.log(metrics, step)
        for key in ("val/top1", "val/top5", "val/map"):
            if key in metrics:
                self.best[key] = max(self.best.get(key, -1.0), float(metrics[key]))
        if confusion is None:  # multi-label runs have none
            self.writer.flush()
            return
        buffer = io.BytesIO()
        plot_confusion(np.asarray(confusion.tolist()), list(names), buffer, "validation confusion matrix")
        image = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
        self.writer.add_image("val/confusion", image, step, dataformats="HWC")
        self.writer.flush()

    def log_explained(self, step: int, pictures: list) -> None:
        """Validation videos drawn with the probe's attention (``ExplainedVideo``, :mod:`.explained`):
        one image each, ``val_explained/<n>_<video>``, the caption as its text."""
        for number, picture in enumerate(pictures):
            tag = f"val_explained/{number}_{picture.tag}"
            self.writer.add_image(tag, picture.image, step, dataformats="HWC")
            self.writer.add_text(tag, picture.caption, step)
        self.writer.flush()

    def log_embeddings(self, step: int, projected) -> None:
        """Validation videos' probe vectors (``ProjectedVideos``, :mod:`.projector`) for the
        PROJECTOR tab, tag ``val_probe``, with each video's path, label and predicted class."""
        import torch

        metadata = [[video, label, predicted] for video, label, predicted
                    in zip(projected.videos, projected.labels, projected.predicted)]  # fmt: skip
        self.writer.add_embedding(torch.from_numpy(projected.vectors), metadata=metadata, global_step=step,
                                  tag="val_probe", metadata_header=["video", "label", "predicted"])  # fmt: skip
        self.writer.flush()

    def finish(self) -> None:
        """Hyperparameters with the best validation metrics, then close the event files."""
        metrics = {f"hparams/best_{k.removeprefix('val/')}": v for k, v in self.best.items()} or {"hparams/none": 0.0}
        self.writer.add_hparams(self.hyperparameters, metrics, run_name=".")
        self.writer.close()
