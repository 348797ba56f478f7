"""Export to a ``transformers`` video-classification directory of the model's family.

``transformers.AutoModelForVideoClassification.from_pretrained(OUT)`` loads it: ``config.json``
(with ``id2label``), ``model.safetensors`` and the processor's config. A ``vit`` model becomes a
``VJEPA2ForVideoClassification`` and a ``videomae`` one (linear head, no layer scale) a
``VideoMAEForVideoClassification``. The family knows how: its Hugging Face layout's
``to_transformers`` hook (:class:`harness.models.family.HFLayout`; the conversions live next to
the layouts they write, :mod:`harness.models.hf_vjepa2` and :mod:`harness.models.videomae`) refuses
a model the layout cannot hold, with the reason, and checks the conversion before anything is
written: the ``transformers`` model must give the harness's logits (1e-4 in fp32) on a random clip.
Square crops only: both families' processors resize a frame's short side to one size, which cannot
reproduce the harness's evaluation resize of a ``[height, width]`` crop (and transformers' V-JEPA 2
takes square frames alone); such a model goes out as safetensors, pt2 or onnx. This module saves
what the hook returns; :func:`harness.export.formats.export_hf` adds ``model.json``.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from harness.core.errors import UserError
from harness.export.model_io import Preprocessing
from harness.models.family import family_of_module
from harness.models.hf_transformers import transformers_module  # noqa: F401  (re-exported: the hf extra's check)


def export_hf_directory(model: nn.Module, preprocessing: Preprocessing, description: dict, out: Path) -> list[Path]:
    """Save the ``transformers`` model and processor of the model's family (see the module docs)
    into the new (staging) folder ``out``; returns the files written."""
    height, width = preprocessing.crop_hw
    if height != width:
        raise UserError(f"the hf format takes square crops: this model's is {height}x{width} (data.crop_size), and "
                        "transformers' processors resize the short side to one size, which cannot reproduce its "
                        "evaluation resize; export safetensors, pt2 or onnx")  # fmt: skip
    if preprocessing.label_sets:
        raise UserError(f"the hf format holds one softmax over all classes; this model has label sets "
                        f"{preprocessing.label_sets} (a softmax each): export safetensors, pt2 or onnx")  # fmt: skip
    family = family_of_module(model.encoder)
    to_transformers = family.hf.to_transformers if family.hf is not None else None
    if to_transformers is None:
        raise UserError(f"the hf format has no exporter for the {family.name} model family; export safetensors, pt2 "
                        "or onnx")  # fmt: skip
    theirs, processor = to_transformers(model, preprocessing, description.get("config", {}))
    theirs.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    return sorted(out.iterdir())
