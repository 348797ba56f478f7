"""Load V-JEPA 2 (and our own) encoder and classifier weights, strictly, with a report.

Accepted layouts: a plain state dict; a dict with the encoder under ``target_encoder`` or
``encoder``; a whole classifier's flat state (``encoder.*`` keys, e.g. ``harness.consolidate``
output); attentive-probe files with heads under ``classifiers`` (a list) or ``classifier``.
Keys may carry ``module.`` (DDP) and/or ``backbone.`` (wrapper) prefixes. ``.pt``/``.pth`` files
are read with ``torch.load(weights_only=True)``; ``.safetensors`` files are accepted too. Which
layouts an encoder accepts is its model family's choice (:mod:`harness.models.family`): these
readers are the ``vit`` family's; Hugging Face directories go to the family of their model type.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from harness.core.errors import UserError
from harness.models.family import (
    FAMILIES,
    DeferredBlocks,
    ModelFamily,
    family_of_hf,
    family_of_module,
    hf_model_types,
)
from harness.models.hf_directory import (
    HFFormatError,
    is_hf_directory,
    read_hf_config,
    read_hf_weights,
    read_safetensors_mapped,
)
from harness.models.vit import interpolate_position_table, sincos_3d, sincos_rows

log = logging.getLogger(__name__)

#: where V-JEPA files keep an encoder, in the order the ``vit`` family looks (V-JEPA 2.1's hub
#: files for ViT-B/L keep theirs under ``ema_encoder``: read so that they are refused by name)
ENCODER_KEYS = ("target_encoder", "encoder", "ema_encoder")
PREFIXES = ("module.", "backbone.", "_orig_mod.")


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be loaded as asked; the message says what is wrong."""


@dataclass
class LoadReport:
    """What a load did. ``interpolated`` lists position tables resized to the model's grid."""

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    interpolated: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One short paragraph for the log."""
        lines = [f"loaded {len(self.loaded)} tensors from {self.source}"]
        for name in ("missing", "unexpected", "mismatched", "interpolated"):
            keys = getattr(self, name)
            if keys:
                shown = ", ".join(keys[:5]) + (f", ... ({len(keys)} in all)" if len(keys) > 5 else "")
                lines.append(f"  {name}: {shown}")
        return "\n".join(lines)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint file into a dict (safe loading: tensors and containers only)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        return read_safetensors_mapped(path)  # memory-mapped, as .pt files below
    try:
        # Memory-mapped: tensors are read from the page cache as they are used (one copy per
        # node, not per rank); files in the pre-zip format cannot be, and are read whole.
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:
        if "mmap" not in str(error):
            raise CheckpointError(f"cannot read checkpoint {path}: {error}") from error
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(f"cannot read checkpoint {path}: {error}") from error


def strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove leading ``module.`` / ``backbone.`` / ``_orig_mod.`` prefixes (in any order)."""
    out = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for prefix in PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix) :], True
        out[key] = value
    return out


def is_state_dict(obj: Any) -> bool:
    """A non-empty dict of tensors only."""
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def encoder_state(
    checkpoint: dict[str, Any], key: str | None = None, keys: tuple[str, ...] = ENCODER_KEYS
) -> dict[str, torch.Tensor]:
    """The encoder's state dict inside ``checkpoint``: under the first of ``keys`` it has
    (``key`` picks one explicitly), else the file's own flat state."""
    keys = (key,) if key else keys
    for candidate in keys:
        if candidate in checkpoint and is_state_dict(checkpoint[candidate]):
            return strip_prefixes(checkpoint[candidate])
    if key is None and is_state_dict(checkpoint):
        state = strip_prefixes(checkpoint)
        nested = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
        return nested or state  # a whole classifier (e.g. a consolidated file): take its encoder
    raise CheckpointError(f"no encoder state under {' or '.join(keys)}; top-level keys: {sorted(checkpoint)[:10]}")


def classifier_state(checkpoint: dict[str, Any], index: int = 0) -> dict[str, torch.Tensor]:
    """The attentive classifier's state dict (``classifiers[index]`` or ``classifier``)."""
    if "classifiers" in checkpoint:
        heads = checkpoint["classifiers"]
        if not isinstance(heads, (list, tuple)) or not heads:
            raise CheckpointError("'classifiers' must be a non-empty list of state dicts")
        if index >= len(heads):
            raise CheckpointError(f"classifier index {index} out of range: the file has {len(heads)} heads")
        return strip_prefixes(heads[index])
    if "classifier" in checkpoint and is_state_dict(checkpoint["classifier"]):
        return strip_prefixes(checkpoint["classifier"])
    raise CheckpointError(f"no classifier under 'classifiers' or 'classifier'; keys: {sorted(checkpoint)[:10]}")


def vjepa_version(state: dict[str, torch.Tensor]) -> tuple[str, str] | None:
    """``(version, evidence)`` of a V-JEPA encoder state: ``"2.1"`` when it has V-JEPA 2.1's
    per-level norms, image path or modality embeddings; ``"2.0"`` when it has 2.0's final norm
    or sin-cos table; None when it has neither (not a V-JEPA encoder)."""
    found = [
        f"'{part}'"
        for part in ("norms_block.*", "patch_embed_img.*", "img_mod_embed", "video_mod_embed")
        if any(key == part or key.startswith(part.rstrip("*")) for key in state)
    ]
    if found:
        return "2.1", f"it has {', '.join(found)}"
    found = [f"'{key}'" for key in ("norm.weight", "pos_embed") if key in state]
    if found:
        return "2.0", f"it has {' and '.join(found)} and no per-level 'norms_block.*'"
    return None


def refuse_vjepa21_state(state: dict[str, torch.Tensor], encoder: nn.Module) -> str | None:
    """The ``vit`` family's layout check: a V-JEPA 2.1 encoder does not load into a 2.0 model."""
    version = vjepa_version(state)
    if version and version[0] == "2.1":
        return (f"a V-JEPA 2.1 encoder ({version[1]}) given to a V-JEPA 2.0 model ({type(encoder).__name__}, "
                f"vit family): use a vjepa2.1 model, e.g. model.model_name=vjepa2_1_vit_large_384")  # fmt: skip
    return None


def _resize_position_table(table: torch.Tensor, model: nn.Module) -> torch.Tensor | None:
    """Fit a saved ``[1, N, D]`` sin-cos table to the model's grid (:func:`interpolate_position_table`).

    ``N`` alone does not give the saved grid (1568 tokens are 8x14x14 or 2x28x28), so the grid is
    the one whose sin-cos table (either channel split) the file holds: V-JEPA 2's and ours are
    never trained. Grids of square frames are tried first (V-JEPA 2's, and every square crop's),
    then those of other frames (a run with ``data.crop_size: [H, W]``). A table that is no such
    table is resized only when ``N`` allows one grid of square frames; otherwise ``None`` (the key
    is reported mismatched).
    """
    grid = getattr(model, "grid_size", None)
    target = getattr(model, "pos_embed", None)
    if grid is None or target is None or table.shape[-1] != target.shape[-1]:
        return None
    count = table.shape[1]
    grids = token_grids(count)
    square = [g for g in grids if g[1] == g[2]]
    saved = [g for g in square if _holds_sincos(table, g)]
    if not saved:
        saved = [g for g in grids if g[1] != g[2] and _holds_sincos(table, g, quick=True)]
    if not saved and len(square) == 1:
        saved = square
    return interpolate_position_table(table, saved[0], grid) if len(saved) == 1 else None


def token_grids(count: int) -> list[tuple[int, int, int]]:
    """Every ``(t, h, w)`` grid of ``count`` tokens, ``t`` ascending, then ``h``."""
    divisors = [d for d in range(1, count + 1) if count % d == 0]
    return [(t, h, count // (t * h)) for t in divisors for h in divisors if (count // t) % h == 0]


def _holds_sincos(table: torch.Tensor, grid: tuple[int, int, int], quick: bool = False) -> bool:
    """Whether ``table [1, N, D]`` is :func:`sincos_3d`'s table of ``grid`` (either channel split);
    ``quick`` compares a few rows first, so that the many grids a count allows cost little."""
    dim, values = table.shape[-1], table[0].float()
    for power in (False, True):
        if quick:
            rows = np.unique(np.linspace(0, len(values) - 1, min(len(values), 64)).astype(np.int64))
            if not torch.allclose(values[torch.from_numpy(rows)], sincos_rows(dim, grid, rows, power), atol=1e-2):
                continue
        if torch.allclose(values, sincos_3d(dim, grid, power), atol=1e-2):
            return True
    return False


def load_into(
    module: nn.Module,
    state: dict[str, torch.Tensor],
    source: str,
    strict: bool = True,
) -> LoadReport:
    """Copy ``state`` into ``module`` and report; position tables of another grid are resized.

    With ``strict`` any missing, unexpected or mismatched key is an error (after the report).
    """
    own = module.state_dict()
    report = LoadReport(source)
    accepted = {}
    for key, value in state.items():
        if key not in own:
            report.unexpected.append(key)
        elif own[key].shape != value.shape:
            resized = _resize_position_table(value, module) if key == "pos_embed" else None
            if resized is not None and resized.shape == own[key].shape:
                accepted[key] = resized
                report.interpolated.append(f"{key} {tuple(value.shape)} -> {tuple(resized.shape)}")
            else:
                report.mismatched.append(f"{key} {tuple(value.shape)} vs model {tuple(own[key].shape)}")
        else:
            accepted[key] = value
    report.missing = [k for k in own if k not in state]  # keys present with another shape are "mismatched"
    report.loaded = sorted(accepted)
    # (tensors still on the meta device are filled later: see DeferredBlocks)
    module.load_state_dict({k: v for k, v in accepted.items() if not own[k].is_meta}, strict=False)
    log.info(report.summary())
    if strict and (report.missing or report.unexpected or report.mismatched):
        raise CheckpointError("strict load failed (pass strict=False to accept a partial load):\n" + report.summary())
    return report


def load_encoder(
    encoder: nn.Module,
    path: str | Path,
    key: str | None = None,
    strict: bool = True,
    allow_random_init: bool = False,
    deferred: DeferredBlocks | None = None,
) -> LoadReport:
    """Load encoder weights from a file or Hugging Face directory in any layout the encoder's
    model family reads (:mod:`harness.models.family`; e.g. V-JEPA 2 or harness files for ``vit``).
    With ``deferred`` (blocks still on the meta device), the blocks' tensors are kept there for
    the sharding strategy to copy as it materialises each block.

    A load that would leave any encoder weight at its random initialisation is an error unless
    ``allow_random_init`` is set, even with ``strict=False`` (extra keys are then tolerated).
    """
    family = family_of_module(encoder)
    if is_hf_directory(path):
        state = _hf_state(family, path, "encoder")
    else:
        state = family.encoder_states(read_checkpoint(path), key)
        if state is None:
            raise CheckpointError(f"{path}: no {family.name} encoder weights in this file")
    problem = family.layout_problem(state, encoder) if family.layout_problem else None
    if problem:  # another version's layout: refused by name, never half-loaded
        raise CheckpointError(f"{path}: {problem}")
    report = load_into(encoder, state, str(path), strict=False)  # blocks still on the meta device: see below
    if deferred is not None:  # a sharding strategy copies these as it materialises each block
        deferred.state = {k: v for k, v in state.items() if k.startswith("blocks.")}
    left_random = report.missing + report.mismatched
    if left_random and not allow_random_init:
        raise CheckpointError(
            f"{path}: {len(left_random)} encoder tensors would stay randomly initialised "
            f"(e.g. {left_random[0]}); check model_name/patch_size/tubelet_size/use_rope match the "
            f"checkpoint, or pass allow_random_init=True to accept it.\n{report.summary()}"
        )
    if strict and report.unexpected:
        raise CheckpointError(f"{path}: unexpected encoder keys (strict=False to ignore):\n{report.summary()}")
    return report


def hf_family(path: str | Path, expected: ModelFamily | None = None) -> tuple[ModelFamily, dict[str, Any]]:
    """The model family of a Hugging Face directory and its ``config.json``; with ``expected``,
    a directory of another family is a :class:`CheckpointError` naming both."""
    try:
        config = read_hf_config(path, hf_model_types())
    except HFFormatError as error:
        raise CheckpointError(str(error)) from None
    owner = family_of_hf(config["model_type"])
    if expected is not None and owner is not expected:
        raise CheckpointError(f"{path} holds a {config['model_type']} model of the {owner.name} family; "
                              f"model.model_name is of the {expected.name} family (choose one of "
                              f"{', '.join(sorted(owner.sizes)[:4])}, ...)")  # fmt: skip
    return owner, config


def _hf_state(family: ModelFamily, path: str | Path, part: str) -> dict[str, torch.Tensor]:
    _, config = hf_family(path, family)
    convert = family.hf.encoder_state if part == "encoder" else family.hf.classifier_state
    try:
        state = convert(read_hf_weights(path))
    except HFFormatError as error:  # (its message names the file when it is one of the directory's)
        raise CheckpointError(str(error) if str(path) in str(error) else f"{path}: {error}") from None
    if not state:
        raise CheckpointError(f"{path}: no {part} weights in this {config['model_type']} directory")
    return state


def load_classifier(
    classifier: nn.Module, path: str | Path, index: int = 0, strict: bool = True, family: str = "vit"
) -> LoadReport:
    """Load a classifier head of the ``family``'s layouts: for ``vit`` an attentive probe
    (``classifiers[index]`` or ``classifier``) or the pooler and head of a Hugging Face
    ``VJEPA2ForVideoClassification`` directory; for ``videomae`` the ``fc_norm``/``head`` of a
    VideoMAE file or ``VideoMAEForVideoClassification`` directory."""
    owner = FAMILIES[family]
    if is_hf_directory(path):
        state = _hf_state(owner, path, "classifier")
    else:
        state = owner.classifier_states(read_checkpoint(path), index)
        if not state:
            raise CheckpointError(f"{path}: no {family} classifier weights in this file")
    return load_into(classifier, state, str(path), strict)
