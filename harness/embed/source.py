"""The model ``harness.embed`` reads: a trained classifier from any source ``harness.predict``
reads (:func:`harness.export.model_io.read_source`), or an encoder alone, built the way a run
builds its pretrained encoder (``meta.pretrain_checkpoint``: :func:`harness.training.model_parts.
build_encoder`).

Encoders alone: a V-JEPA 2 (or 2.1) pretraining checkpoint (``encoder`` / ``target_encoder``), a
VideoMAE checkpoint, or a Hugging Face ``VJEPA2Model`` / ``VideoMAEModel`` directory. A file does
not say its size, so it needs the model's name (``vit_large_rope``...); a directory's
``config.json`` gives its size and clip shape.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from pathlib import Path
from typing import Any

from torch import nn

from harness.config import ConfigError, load_config
from harness.core.crop import crop_hw, crop_text
from harness.core.errors import UserError
from harness.export.folder import MODEL_FILE
from harness.export.model_io import Preprocessing, read_source
from harness.models.checkpoint_io import hf_family
from harness.models.family import FamilyError, ModelFamily, family_of
from harness.models.hf_directory import is_hf_directory

CLIP_KEYS = ("num_clips", "num_views", "frame_step", "fps", "duration")  #: clip settings any source takes
#: the config keys an encoder alone is built from, by the flag (or argument) that sets them
FLAGS = {"data.dataset_fpcs": "--frames", "data.val_dataset_fpcs": "--frames", "data.crop_size": "--crop-size",
         "data.patch_size": "--patch-size", "data.tubelet_size": "--tubelet-size", "model.model_name": "--model-name",
         "meta.checkpoint_key": "--checkpoint-key", "meta.pretrain_checkpoint": "MODEL"}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class EncoderOptions:
    """What an encoder alone needs besides its weights (None: the file's or the family's default)."""

    model_name: str | None = None  #: a registered name (``vit_large_rope``); a directory's default: its family's
    patch_size: int | None = None  #: spatial patch (default 16; a directory's own)
    tubelet_size: int | None = None  #: frames per temporal patch (default 2; a directory's own)
    checkpoint_key: str | None = None  #: where the encoder is in the file (default: target_encoder, encoder)

    def given(self) -> list[str]:
        """The options set, as their command-line flags."""
        return [f"--{f.name.replace('_', '-')}" for f in dataclasses.fields(self) if getattr(self, f.name) is not None]


@dataclasses.dataclass
class EmbeddingModel:
    """A model to embed with: ``model`` (a ``VideoClassifier``, or an encoder alone) in fp32 on
    the CPU in eval mode, the clips it takes, and where it came from (for ``embeddings.json``)."""

    model: nn.Module
    preprocessing: Preprocessing
    description: dict[str, Any]

    @property
    def has_probe(self) -> bool:
        """Whether there is a classifier whose pooled vector is the ``probe`` feature."""
        return self.description["kind"] == "classifier"


def is_encoder_source(path: Path) -> bool:
    """A file that is not a checkpoint pointer, or a Hugging Face directory of a model without a
    classification head."""
    if path.is_file():
        return not (path.parent.name == "checkpoints" and path.suffix == "")
    if is_hf_directory(path) and not (path / MODEL_FILE).is_file():
        try:
            architectures = json.loads((path / "config.json").read_text(encoding="utf-8")).get("architectures")
        except (OSError, ValueError, AttributeError):
            return False  # read_source then says what is wrong with it
        return not any(str(name).endswith("ForVideoClassification") for name in architectures or [])
    return False


def load_embedding_model(source: str | Path, weights: str = "ema", encoder: EncoderOptions | None = None,
                         **clip_overrides: Any) -> EmbeddingModel:  # fmt: skip
    """The model of ``source`` (see the module docs); ``clip_overrides`` (:data:`CLIP_KEYS`, and
    ``frames_per_clip`` / ``crop_size``) change how clips are taken."""
    path, encoder = Path(source), encoder or EncoderOptions()
    if not path.exists():
        raise UserError(f"model not found: {path}")
    if is_encoder_source(path):
        loaded = load_encoder_only(path, encoder, clip_overrides.get("frames_per_clip"),
                                   clip_overrides.get("crop_size"))  # fmt: skip
    elif encoder.given():
        raise UserError(f"{', '.join(encoder.given())}: for an encoder alone; {path} is a trained classifier, "
                        "whose model is saved with it")  # fmt: skip
    else:
        model, preprocessing, description = read_source(path, weights)
        keep = ("source", "source_format", "strategy", "step", "weights")
        description = {"kind": "classifier", **{k: v for k, v in description.items() if k in keep}}
        loaded = EmbeddingModel(model, preprocessing, description)
    try:
        loaded.preprocessing = loaded.preprocessing.with_sampling(**clip_overrides)
    except ValueError as error:
        raise UserError(f"clip settings: {error}") from None
    check_clip_shape(loaded)
    return loaded


def check_clip_shape(loaded: EmbeddingModel) -> None:
    """Clips that fill the encoder's patches (a user error naming the flags, not a failed forward)."""
    encoder = getattr(loaded.model, "encoder", loaded.model)
    frames, crop = loaded.preprocessing.frames_per_clip, loaded.preprocessing.crop_size
    tubelet, patch = encoder.tubelet_for(frames), encoder.patch_size
    if frames % tubelet or any(side % patch for side in crop_hw(crop)):
        raise UserError(f"--frames {frames} --crop-size {crop_text(crop)}: clips must fill the encoder's patches of "
                        f"{tubelet} frames and {patch} pixels (give multiples of them)")  # fmt: skip


def load_encoder_only(path: Path, settings: EncoderOptions, frames: int | None = None,
                      crop_size: int | list[int] | None = None) -> EmbeddingModel:  # fmt: skip
    """An encoder file or Hugging Face encoder directory, with the preprocessing of clips of
    ``frames`` frames of ``crop_size`` pixels, one side or ``[height, width]`` (default: the
    directory's, else the family's; every 4th frame, ImageNet mean and std)."""
    from harness.training.model_parts import build_encoder

    size: dict[str, Any] = {}
    if path.is_dir():
        family, hf_config = hf_family(path)
        name = settings.model_name or family.hf.model_name
        shape = family.hf.clip_shape(hf_config)
        size = {"patch_size": hf_config.get("patch_size"), "tubelet_size": hf_config.get("tubelet_size")}
    elif settings.model_name is None:
        raise UserError(f"{path} is an encoder file, which does not say its size: give --model-name (e.g. "
                        "vit_large_rope for V-JEPA 2's ViT-L, videomae_base for VideoMAE's ViT-B)")  # fmt: skip
    else:
        name = settings.model_name
        shape = default_clip_shape(_family(name))
    family = _family(name)
    frames, crop = frames or shape[0], crop_size or shape[1]
    patch = settings.patch_size or size.get("patch_size") or 16
    tubelet = settings.tubelet_size or size.get("tubelet_size") or 2
    overrides = [f"model.model_name={name}", f"meta.pretrain_checkpoint={path}", f"data.crop_size={_yaml(crop)}",
                 f"data.dataset_fpcs=[{frames}]", f"data.val_dataset_fpcs=[{frames}]", f"data.patch_size={patch}",
                 f"data.tubelet_size={tubelet}", "model.compile_model=false"]  # fmt: skip
    if settings.checkpoint_key:
        overrides.append(f"meta.checkpoint_key={settings.checkpoint_key}")
    try:
        encoder = build_encoder(load_config(None, overrides)).eval()
    except ConfigError as error:  # said with the flags that set the keys
        text = str(error)
        for key, flag in FLAGS.items():
            text = text.replace(key, flag)
        raise UserError(text) from None
    preprocessing = Preprocessing(frames, crop, [], sampling_rule="harness")
    named = settings.model_name or not path.is_dir()  # (a directory's sizes are its config.json's, not a name's)
    description = {"kind": "encoder", "source": str(path.resolve()), "family": family.name,
                   "model_name": name if named else None, "patch_size": patch, "tubelet_size": tubelet}  # fmt: skip
    return EmbeddingModel(encoder, preprocessing, description)


def _yaml(crop: int | list[int]) -> str:
    """A crop size as an override's value: ``224`` or ``[224, 320]``."""
    return str(crop) if isinstance(crop, int) else f"[{', '.join(str(side) for side in crop_hw(crop))}]"


def _family(name: str) -> ModelFamily:
    try:
        return family_of(name)
    except FamilyError as error:
        raise UserError(f"--model-name: {error}") from None


def default_clip_shape(family: ModelFamily) -> tuple[int, int]:
    """``(frames, crop)`` of an encoder file of ``family``: the family's Hugging Face defaults
    (V-JEPA 2: 16 frames of 256 px; VideoMAE: 16 of 224), else its encoder's constructor defaults."""
    if family.hf is not None:
        return family.hf.clip_shape({})
    defaults = inspect.signature(family.build).parameters
    return defaults["num_frames"].default, defaults["img_size"].default
