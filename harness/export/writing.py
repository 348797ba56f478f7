"""Writing an export: :func:`export` (any source into one format) and :func:`write_export` (a model
already in memory), each whole or not at all (see :mod:`harness.export.folder`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.core.errors import UserError

if TYPE_CHECKING:
    from torch import nn

    from harness.export.model_io import Preprocessing


def export(source: str | Path, out: str | Path, fmt: str = "safetensors", weights: str = "ema") -> list[Path]:
    """Write ``source`` as ``fmt`` into ``out``; returns the files written."""
    from harness.export.folder import check_target
    from harness.export.formats import EXPORTERS
    from harness.export.model_io import read_source

    if fmt not in EXPORTERS:
        raise UserError(f"--format {fmt!r} is not one of {', '.join(EXPORTERS)}")
    check_target(Path(out))  # before reading the source
    return write_export(*read_source(source, weights), Path(out), fmt)


def write_export(model: nn.Module, preprocessing: Preprocessing, description: dict[str, Any], out: Path,
                 fmt: str) -> list[Path]:  # fmt: skip
    """Write a prepared model in format ``fmt`` into ``out``, whole or not at all (see
    :mod:`harness.export.folder`); returns the files written."""
    from harness.export.folder import check_target, staged
    from harness.export.formats import EXPORTERS

    if fmt == "safetensors" and "config" not in description:
        raise UserError(f"{description.get('source')} holds no harness config to rebuild the model from; export "
                        "it as onnx or pt2")  # fmt: skip
    check_target(out)
    with staged(out) as staging:
        written = EXPORTERS[fmt](model, preprocessing, description, staging)
    return [out / path.relative_to(staging) for path in written]
