"""Export formats: each writes a self-describing directory from a plain classifier.

Every format writes ``model.json`` (classes, preprocessing, the config that rebuilds the model,
where it came from, the size and SHA-256 of the other files) after its weights, into a staging
folder that :mod:`harness.export.folder` renames into place; files are made readable by the
group (0644). Formats register themselves in :data:`EXPORTERS` (name -> function), which the
command's choices come from.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.core.errors import UserError
from harness.export.folder import file_records
from harness.export.hf import export_hf_directory
from harness.export.model_io import MODEL_FILE, WEIGHTS_FILE, Preprocessing

FILE_MODE = 0o644
Exporter = Callable[[nn.Module, Preprocessing, dict[str, Any], Path], list[Path]]
EXPORTERS: dict[str, Exporter] = {}


def exporter(name: str) -> Callable[[Exporter], Exporter]:
    """Register an export format under ``name``."""

    def register(function: Exporter) -> Exporter:
        EXPORTERS[name] = function
        return function

    return register


def publish(path: Path, write: Callable[[Path], None]) -> Path:
    """Let ``write(temporary_path)`` write the file, then make it 0644 and rename it into place."""
    temporary = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        write(temporary)
        os.chmod(temporary, FILE_MODE)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def write_description(out: Path, preprocessing: Preprocessing, description: dict[str, Any], **extra: Any) -> Path:
    """``model.json``: classes, preprocessing, the rest of ``description``, and the size and
    SHA-256 of every other file in ``out`` (so write it last)."""
    names = preprocessing.class_names
    values = {**description, "num_classes": len(names), "label_map": {str(i): n for i, n in enumerate(names)},
              "preprocessing": preprocessing.as_dict(), **extra, "files": file_records(out)}  # fmt: skip
    text = json.dumps(values, indent=2) + "\n"
    return publish(out / MODEL_FILE, lambda path: path.write_text(text, encoding="utf-8"))


@exporter("safetensors")
def export_safetensors(model: nn.Module, preprocessing: Preprocessing, description: dict, out: Path) -> list[Path]:
    """``model.safetensors`` (fp32 state dict) + ``model.json``; :func:`harness.load_classifier`
    rebuilds it."""
    from safetensors.torch import save_file

    state = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    weights = publish(out / WEIGHTS_FILE, lambda path: save_file(state, str(path)))
    return [weights, write_description(out, preprocessing, description, format="safetensors")]


class ClipClassifier(nn.Module):
    """The classifier as a graph of one input: normalised clips ``[B, clips x views, C, T, H, W]``
    -> logits ``[B, classes]`` (the views and clips of a video averaged as in evaluation)."""

    def __init__(self, model: nn.Module, num_views: int) -> None:
        super().__init__()
        self.model, self.num_views = model, num_views

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.model(clips, None, self.num_views)


def graph_input(model: nn.Module, preprocessing: Preprocessing, batch: int = 2) -> tuple[nn.Module, torch.Tensor]:
    """The traceable module and an example input of the fixed clip shape."""
    if getattr(model, "temporal_pos_embed", False):
        raise UserError("this model adds a position table by frame index (model.temporal_pos_embed): its graph would "
                        "need the clips' frame indices as an input; export it as safetensors")  # fmt: skip
    p = preprocessing
    shape = (batch, p.num_clips * p.num_views, 3, p.frames_per_clip, *p.crop_hw)
    return ClipClassifier(model, p.num_views).eval(), torch.randn(*shape, generator=torch.Generator().manual_seed(0))


def exported_program(model: nn.Module, preprocessing: Preprocessing) -> torch.export.ExportedProgram:
    """The classifier as one ``torch.export`` graph of the fixed clip shape with a dynamic batch
    (what the ``pt2`` file holds and what the ``onnx`` file is translated from)."""
    wrapped, example = graph_input(model, preprocessing)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with torch.no_grad():
        return torch.export.export(wrapped, (example,), dynamic_shapes={"clips": {0: batch}})


@exporter("pt2")
def export_pt2(model: nn.Module, preprocessing: Preprocessing, description: dict, out: Path) -> list[Path]:
    """``model.pt2`` (``torch.export``; the batch dimension is dynamic) + ``model.json``; load
    with ``torch.export.load(path).module()``."""
    program = exported_program(model, preprocessing)
    weights = publish(out / "model.pt2", lambda path: torch.export.save(program, str(path)))
    return [weights, write_description(out, preprocessing, description, format="pt2", file="model.pt2")]


@exporter("onnx")
def export_onnx(model: nn.Module, preprocessing: Preprocessing, description: dict, out: Path) -> list[Path]:
    """``model.onnx`` (input ``clips``, output ``logits``; dynamic batch) + ``model.json``."""
    try:
        import onnxscript  # noqa: F401  (torch's ONNX exporter needs it)
    except ImportError:
        raise UserError("the onnx format needs the onnx extra: pip install 'harness[onnx]'") from None
    program = exported_program(model, preprocessing)

    def write(path: Path) -> None:
        onnx = torch.onnx.export(program, input_names=["clips"], output_names=["logits"], dynamo=True,
                                 external_data=False, verbose=False)  # fmt: skip
        onnx.save(str(path))

    weights = publish(out / "model.onnx", write)
    return [weights, write_description(out, preprocessing, description, format="onnx", file="model.onnx")]


@exporter("hf")
def export_hf(model: nn.Module, preprocessing: Preprocessing, description: dict, out: Path) -> list[Path]:
    """A ``transformers`` video-classification directory of the model's family (see
    :mod:`harness.export.hf`) + ``model.json``."""
    written = export_hf_directory(model, preprocessing, description, out)
    for path in written:
        path.chmod(FILE_MODE)
    return [*written, write_description(out, preprocessing, description, format="hf")]
