"""Hugging Face ``save_pretrained`` directories (``config.json`` + safetensors), read without
``transformers``: what every family's Hugging Face layout shares."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from harness.errors import UserError

HF_CONFIG = "config.json"


class HFFormatError(UserError, ValueError):
    """A directory that is not a readable Hugging Face model of a registered family."""


def is_hf_directory(path: str | Path) -> bool:
    """True for a directory holding a ``config.json`` (a ``save_pretrained`` output)."""
    return Path(path).is_dir() and (Path(path) / HF_CONFIG).is_file()


def read_hf_config(path: str | Path, model_types: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """The directory's ``config.json``; its ``model_type`` must be one of ``model_types``."""
    file = Path(path) / HF_CONFIG
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise HFFormatError(f"{file}: cannot read the model config ({error})") from None
    if config.get("model_type") not in model_types:
        expected = " or ".join(repr(t) for t in model_types)
        raise HFFormatError(f"{file}: model_type is {config.get('model_type')!r}, expected {expected}")
    return config


def read_hf_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of ``model.safetensors`` or of the shards named by its index file."""
    from safetensors.torch import load_file

    root = Path(path)
    index = root / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        files = [root / shard for shard in shards]
    else:
        files = [root / "model.safetensors"]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise HFFormatError(f"{root}: no weights ({', '.join(missing)} missing); save with save_pretrained")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(load_file(str(file)))
    return state


def class_names(config: dict[str, Any]) -> list[str] | None:
    """Class names in id order from ``id2label`` (None when absent)."""
    labels = config.get("id2label")
    if not labels:
        return None
    return [str(labels.get(str(i), labels.get(i, i))) for i in range(len(labels))]
