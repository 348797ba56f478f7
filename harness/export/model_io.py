"""A trained classifier as a plain module, from any source, with the preprocessing it expects.

Sources: a run folder (its best, else latest checkpoint), a checkpoint folder or pointer of any
strategy (read offline: no process group, no DeepSpeed engine), an exported or consolidated
directory (``model.json`` + ``model.safetensors``), or a Hugging Face V-JEPA 2 classifier
directory (``config.json`` + weights, as ``transformers`` saves them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.config import Config, config_from_dict, load_config
from harness.core.crop import crop_hw
from harness.core.errors import UserError
from harness.data.sampling import ClipSpec
from harness.data.transforms import IMAGENET_MEAN, IMAGENET_STD, EvalTransform
from harness.export.folder import AGAIN, MODEL_FILE, ExportError, read_description, verify_files
from harness.models.checkpoint_io import CheckpointError, hf_family
from harness.models.hf_directory import class_names, is_hf_directory, read_safetensors_mapped
from harness.parallel.registry import strategy_spec
from harness.parallel.strategy import load_model_state
from harness.training.optim import clean_name
from harness.training.state.checkpoint import damage, read_checkpoint_meta, resolve_checkpoint
from harness.training.state.ema import read_rank_files, whole_average

WEIGHTS_FILE = "model.safetensors"


@dataclasses.dataclass
class Preprocessing:
    """How a video becomes the model's input, and what its outputs mean.

    Clips of ``frames_per_clip`` frames, every ``frame_step``-th frame (or at ``fps``, or spanning
    ``duration`` seconds), ``num_clips`` spread over the video, each resized (a square crop: the
    short side to ``crop_size x 256/224``; a ``[height, width]`` crop: to the smallest size that
    covers ``[height, width] x 256/224``, see :class:`~harness.data.transforms.EvalTransform`) and
    cut into ``num_views`` crops of ``crop_size``, scaled to [0, 1] and normalised with
    ``mean``/``std``; the model averages its logits over clips and views. Logit ``i`` is class
    ``class_names[i]``; its probability is the softmax over classes, or, for a ``multi_label``
    model (several classes per video), the sigmoid of each logit. A
    model of several ``label_sets`` (``{set: classes}``, in order) has every set's logits end to
    end (``class_names`` too): each set's probabilities are the softmax over its own slice.
    """

    frames_per_clip: int
    crop_size: int | list[int]  #: one side (a square crop), or [height, width]
    class_names: list[str]
    frame_step: int | None = 4
    fps: float | None = None
    duration: float | None = None
    sampling_rule: str = "harness"
    num_clips: int = 1
    num_views: int = 1
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    multi_label: bool = False
    label_sets: dict[str, int] | None = None

    @classmethod
    def from_config(cls, config: Config, class_names: list[str],
                    label_sets: dict[str, int] | None = None) -> Preprocessing:  # fmt: skip
        """The validation preprocessing of a run's config (``label_sets``: a label-set run's
        ``{set: classes}``, as its checkpoints record them)."""
        data = config.data
        rule = "harness" if data.sampling_rule == "auto" else data.sampling_rule
        return cls(max(data.val_dataset_fpcs), data.crop_size, list(class_names), data.val_frame_step, data.val_fps,
                   data.val_duration, rule, data.val_num_clips, data.num_views,
                   multi_label=config.meta.multi_label, label_sets=label_sets)  # fmt: skip

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Preprocessing:
        """Inverse of :meth:`as_dict` (unknown keys are refused)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - fields)
        if unknown:
            raise UserError(f"preprocessing: unknown keys {unknown}")
        values = {**values, **{k: tuple(values[k]) for k in ("mean", "std") if k in values}}
        preprocessing = cls(**values)
        try:
            crop_hw(preprocessing.crop_size)
        except ValueError as error:
            raise UserError(f"preprocessing: {error}") from None
        return preprocessing

    def as_dict(self) -> dict[str, Any]:
        """Plain values (JSON)."""
        values = dataclasses.asdict(self)
        return {**values, "mean": list(self.mean), "std": list(self.std)}

    def with_sampling(self, **overrides: Any) -> Preprocessing:
        """A copy with other clip settings; setting one of frame_step/fps/duration clears the others."""
        overrides = {k: v for k, v in overrides.items() if v is not None}
        if any(k in overrides for k in ("frame_step", "fps", "duration")):
            overrides = {"frame_step": None, "fps": None, "duration": None, **overrides}
        updated = dataclasses.replace(self, **overrides)
        updated.clip_spec()  # checks the combination
        return updated

    @property
    def crop_hw(self) -> tuple[int, int]:
        """``(height, width)`` of the crop in pixels: the input is ``[..., C, T, height, width]``."""
        return crop_hw(self.crop_size)

    def clip_spec(self) -> ClipSpec:
        """Which frames make a clip."""
        return ClipSpec(self.frames_per_clip, frame_step=self.frame_step, fps=self.fps, duration=self.duration,
                        rule=self.sampling_rule)  # fmt: skip

    def transform(self, normalize: bool = False) -> EvalTransform:
        """The evaluation views of one clip (``uint8`` unless ``normalize``)."""
        return EvalTransform(self.crop_size, num_views=self.num_views, mean=self.mean, std=self.std,
                             normalize=normalize)  # fmt: skip


def plain_config(config: Config, **meta: Any) -> Config:
    """``config`` for a single-device rebuild: no compile, nothing read from other files."""
    values = {"pretrain_checkpoint": None, "classifier_checkpoint": None, **meta}
    return dataclasses.replace(config, model=dataclasses.replace(config.model, compile_model=False),
                               meta=dataclasses.replace(config.meta, **values))  # fmt: skip


def build_plain_model(config: Config, num_classes: int) -> nn.Module:
    """The single-device model of ``config`` (no compile, no wrapping) in fp32 on the CPU."""
    from harness.training.assemble import build_model

    plain = dataclasses.replace(config, model=dataclasses.replace(config.model, compile_model=False))
    return build_model(plain, num_classes)


@contextlib.contextmanager
def reading(folder: Path, file: str) -> Iterator[None]:
    """Turn an unreadable checkpoint file (``file`` in ``folder``, or the folder's files when it is
    not there) into a :class:`CheckpointError` naming it."""
    try:
        yield
    except (RuntimeError, ValueError, EOFError, OSError, pickle.UnpicklingError, KeyError) as error:
        where = folder / file if (folder / file).is_file() else folder
        text = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
        raise CheckpointError(f"{where} cannot be read ({type(error).__name__}: {text}): the checkpoint is damaged; "
                              "export an earlier one (e.g. another folder under checkpoints/)") from None  # fmt: skip


def read_model_state(checkpoint: Path, meta: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The model's (possibly trainable-only) state from a checkpoint of any strategy, offline."""
    spec = strategy_spec(meta["strategy"])
    with reading(checkpoint, "state.pt"):
        return spec.read_model_state(checkpoint)


@dataclasses.dataclass
class TrainedModel:
    """A checkpoint read back: the plain model (a multi-head run's heads all present), the
    checkpoint's ``meta.json`` and whether the weights are the moving average."""

    model: nn.Module
    meta: dict[str, Any]
    config: Config
    folder: Path
    ema: bool


def read_trained_model(checkpoint: str | Path, weights: str = "ema") -> TrainedModel:
    """Rebuild the model of any harness checkpoint (any strategy) and load its weights;
    ``weights="ema"`` swaps in the moving average of the weights where the run kept one."""
    folder = resolve_checkpoint(checkpoint)
    meta = read_checkpoint_meta(folder)
    if problem := damage(folder):
        raise CheckpointError(f"{folder} is damaged: {problem}")
    # Every weight comes from the checkpoint, except a frozen encoder that was not saved in it.
    config = config_from_dict(meta["config"])
    config = plain_config(config, pretrain_checkpoint=config.meta.pretrain_checkpoint)
    model = build_plain_model(config, meta["num_classes"])
    load_model_state(model, read_model_state(folder, meta))
    with reading(folder, "rank_r0.pt"):
        average = whole_average(read_rank_files(folder)) if weights == "ema" else None
    if average:  # the average replaces the trained weights it tracks, whatever the strategy's shards
        parameters = {clean_name(name): p for name, p in model.named_parameters()}
        with torch.no_grad():
            for name, value in average.items():
                parameters[name].copy_(value)
    return TrainedModel(model.eval(), meta, config, folder, bool(average))


def single_head(trained: TrainedModel) -> tuple[nn.Module, dict[str, Any]]:
    """The model with only the best head of a multi-head run (a plain classifier), and the config
    values that rebuild it."""
    model, values = trained.model, trained.meta["config"]
    heads = getattr(model.classifier, "heads", None)
    if heads is None:
        return model, values
    best = trained.meta.get("best_head") or 0
    model.classifier = heads[best]
    values = json.loads(json.dumps(values))
    optimization = values["optimization"]
    optimization.update(optimization.pop("heads")[best])
    optimization["heads"] = []
    return model, values


def class_names_of(meta: dict[str, Any]) -> list[str]:
    return list(meta.get("class_names") or [str(i) for i in range(meta["num_classes"])])


def load_exported(folder: str | Path) -> tuple[nn.Module, Preprocessing, dict[str, Any]]:
    """Rebuild the classifier written by the ``safetensors`` export (or ``harness.consolidate``)
    and load its weights strictly, after checking them against ``model.json``; also returns the
    description to carry into a new export."""
    folder = Path(folder)
    description = read_description(folder)
    verify_files(folder, description)
    path = folder / MODEL_FILE
    if description.get("format", "safetensors") != "safetensors":
        raise ExportError(
            f"{path} describes a {description['format']} export, which harness does not load "
            f"(it loads safetensors and hf exports): load {description.get('file')} with its runtime"
        )
    missing = [key for key in ("config", "num_classes", "label_map") if key not in description]
    if missing:
        raise ExportError(f"{path} has no {', '.join(missing)}: it is damaged; {AGAIN}")
    try:
        config = plain_config(config_from_dict(description["config"]))
        names = [description["label_map"][str(i)] for i in range(description["num_classes"])]
        preprocessing = Preprocessing.from_dict(description["preprocessing"]) if "preprocessing" in description else (
            Preprocessing.from_config(config, names))  # fmt: skip
    except (UserError, KeyError, TypeError, ValueError) as error:
        raise ExportError(f"{path}: {error}: it is damaged; {AGAIN}") from None
    model = build_plain_model(config, description["num_classes"])
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise ExportError(f"{weights} is missing: {path} describes it; {AGAIN}")
    try:
        model.load_state_dict(read_safetensors_mapped(weights), strict=True)
    except RuntimeError as error:
        raise ExportError(f"{weights} does not hold the model {path} describes ({str(error).splitlines()[0]}); "
                          f"{AGAIN}") from None  # fmt: skip
    except UserError as error:  # (a damaged file of an export without file records)
        raise ExportError(str(error).replace("write or download it again", AGAIN)) from None
    kept = {k: v for k, v in description.items() if k not in ("label_map", "preprocessing", "num_classes", "files")}
    return model.eval(), preprocessing, kept


def load_hf_classifier(folder: str | Path) -> tuple[nn.Module, Preprocessing]:
    """A Hugging Face video-classification directory of a registered family
    (``VJEPA2ForVideoClassification``, ``VideoMAEForVideoClassification``) as our classifier."""
    saved = None
    if (Path(folder) / MODEL_FILE).is_file():  # written by harness.export: the preprocessing it was trained with
        description = read_description(Path(folder))
        verify_files(Path(folder), description)
        saved = description.get("preprocessing")
    family, hf_config = hf_family(folder)
    names = class_names(hf_config) or [str(i) for i in range(hf_config.get("num_labels", 2))]
    frames, crop = family.hf.clip_shape(hf_config)
    config = load_config(None, [f"meta.pretrain_checkpoint={folder}", f"meta.classifier_checkpoint={folder}",
                                f"data.crop_size={crop}", f"data.dataset_fpcs=[{frames}]",
                                f"data.val_dataset_fpcs=[{frames}]", f"model.model_name={family.hf.model_name}",
                                f"data.patch_size={hf_config.get('patch_size', 16)}",
                                f"data.tubelet_size={hf_config.get('tubelet_size', 2)}"])  # fmt: skip
    model = build_plain_model(config, len(names))
    if saved:
        return model.eval(), Preprocessing.from_dict(saved)
    return model.eval(), Preprocessing.from_config(config, names)


def from_trained(trained: TrainedModel) -> tuple[nn.Module, Preprocessing, dict[str, Any]]:
    """A checkpoint read back as a plain classifier (a multi-head run: its best head), its
    preprocessing, and the description an export writes with it."""
    heads = getattr(trained.model.classifier, "heads", None)
    description = {
        "source": str(trained.folder.resolve()),
        "strategy": trained.meta["strategy"],
        "step": trained.meta["step"],
        "weights": "ema" if trained.ema else "trained",
        "heads_trained": len(heads) if heads is not None else 1,
        "best_head": trained.meta.get("best_head") if heads is not None else None,
    }
    model, description["config"] = single_head(trained)
    sets = trained.meta.get("label_sets")
    return model, Preprocessing.from_config(trained.config, class_names_of(trained.meta), sets), description


def read_source(source: str | Path, weights: str = "ema") -> tuple[nn.Module, Preprocessing, dict[str, Any]]:
    """The plain classifier of any source (see the module docs), its preprocessing, and the
    description an export writes with it."""
    path = Path(source)
    if is_hf_directory(path):  # first: the hf export also writes model.json
        model, preprocessing = load_hf_classifier(path)
        return model, preprocessing, {"source": str(path.resolve()), "source_format": "hf"}
    if (path / MODEL_FILE).is_file():
        return load_exported(path)
    return from_trained(read_trained_model(path, weights))


def load_classifier(source: str | Path, weights: str = "ema") -> tuple[nn.Module, Preprocessing]:
    """A ready ``nn.Module`` (fp32, CPU, eval mode) and its :class:`Preprocessing` from any source
    (see the module docs). Needs neither DeepSpeed nor a process group, except to read a
    DeepSpeed checkpoint itself.

    The module takes normalised clips ``[B, num_clips x num_views, C, T, H, W]`` (and optionally
    their frame indices ``[B, clips, T]``, and ``num_views``) and returns logits ``[B, classes]``.
    """
    model, preprocessing, _ = read_source(source, weights)
    return model, preprocessing
