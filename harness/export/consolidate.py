"""Consolidation as a library (the command is :mod:`harness.consolidate`): any checkpoint into one
plain export (``model.safetensors`` + ``model.json``) plus ``vjepa2_probe.pt``, the probe head(s)
in V-JEPA 2's eval layout, which its eval loads with ``val_only: true``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from harness.export.writing import write_export

if TYPE_CHECKING:
    from torch import nn

VJEPA2_PROBE_FILE = "vjepa2_probe.pt"


def consolidate(checkpoint: str | Path, out: str | Path, weights: str = "ema") -> Path:
    """Write ``out/model.safetensors``, ``out/model.json`` and ``out/vjepa2_probe.pt``; returns ``out``.

    ``weights="ema"`` (default) exports the moving average of the weights where the run kept one
    (``optimization.ema_decay``; what its evaluation used), ``"trained"`` the weights as trained.
    """
    import torch

    from harness.export.formats import publish
    from harness.export.model_io import from_trained, read_trained_model

    out = Path(out)
    trained = read_trained_model(checkpoint, weights)
    heads = list(getattr(trained.model.classifier, "heads", [trained.model.classifier]))
    write_export(*from_trained(trained), out, "safetensors")
    probe = {
        "classifiers": [{f"module.{k}": v.detach().float() for k, v in h.state_dict().items()} for h in heads],
        "epoch": trained.meta["epoch"],
        "best_head": trained.meta.get("best_head") or 0,
    }
    publish(out / VJEPA2_PROBE_FILE, lambda path: torch.save(probe, path))
    return out


def load_consolidated(folder: str | Path) -> nn.Module:
    """Rebuild the classifier from :func:`consolidate`'s output and load its weights strictly."""
    from harness.export.model_io import load_exported

    return load_exported(folder)[0]
