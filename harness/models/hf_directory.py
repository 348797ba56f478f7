"""Hugging Face ``save_pretrained`` directories (``config.json`` + safetensors), read without
``transformers``: what every family's Hugging Face layout shares."""

from __future__ import annotations

import json
import mmap
import struct
from pathlib import Path
from typing import Any

import torch

from harness.core.errors import UserError

HF_CONFIG = "config.json"
#: what every family's config.json must give (``save_pretrained`` always writes them)
SIZE_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads")


class HFFormatError(UserError, ValueError):
    """A directory that is not a readable Hugging Face model of a registered family."""


def is_hf_directory(path: str | Path) -> bool:
    """True for a directory holding a ``config.json`` (a ``save_pretrained`` output)."""
    return Path(path).is_dir() and (Path(path) / HF_CONFIG).is_file()


def read_hf_config(path: str | Path, model_types: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """The directory's ``config.json``; its ``model_type`` must be one of ``model_types`` and it
    must give the model's sizes (:data:`SIZE_KEYS`)."""
    file = Path(path) / HF_CONFIG
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise HFFormatError(f"{file}: cannot read the model config ({error})") from None
    if not isinstance(config, dict):
        raise HFFormatError(f"{file}: not a mapping of settings; save the model with save_pretrained")
    if config.get("model_type") not in model_types:
        expected = " or ".join(repr(t) for t in model_types)
        raise HFFormatError(f"{file}: model_type is {config.get('model_type')!r}, expected {expected}")
    missing = [key for key in SIZE_KEYS if key not in config]
    if missing:
        raise HFFormatError(f"{file}: no {', '.join(missing)} (the model's sizes); save the model with save_pretrained "
                            "or add the keys")  # fmt: skip
    return config


# safetensors' dtype names -> torch dtypes (the ones model weights come in)
_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}  # fmt: skip


def read_safetensors_mapped(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file as views of the memory-mapped file: nothing is read
    until a tensor is used, and the ranks of a node share the pages (``safetensors.load_file``
    copies the whole file into each process). Copy-on-write: a tensor written to gets private
    pages, the file is never changed."""
    size = Path(path).stat().st_size
    if size < 8:
        raise HFFormatError(f"{path}: {size} bytes, too short for a safetensors file (empty or truncated); "
                            "write or download it again")  # fmt: skip
    with open(path, "rb") as handle:
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)
    (length,) = struct.unpack("<Q", mapped[:8])
    if 8 + length > size:
        raise HFFormatError(f"{path}: truncated ({size} bytes, its header alone needs {8 + length}) or not a "
                            "safetensors file; write or download it again")  # fmt: skip
    try:
        return _tensors(mapped, length, size, path)
    except HFFormatError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise HFFormatError(f"{path}: not a readable safetensors file ({type(error).__name__}: {error}); write or "
                            "download it again") from None  # fmt: skip


def _tensors(mapped: mmap.mmap, length: int, size: int, path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors a safetensors header of ``length`` bytes describes, as views of ``mapped``."""
    header = json.loads(mapped[8 : 8 + length])
    base, state = 8 + length, {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if entry["dtype"] not in _DTYPES:
            raise HFFormatError(f"{path}: tensor {name} has dtype {entry['dtype']}, which the harness does not read")
        start, end = entry["data_offsets"]
        if base + end > size:
            raise HFFormatError(f"{path}: truncated: tensor {name} ends at byte {base + end} of a {size}-byte file; "
                                "write or download it again")  # fmt: skip
        dtype = _DTYPES[entry["dtype"]]
        count = (end - start) // torch.empty((), dtype=dtype).element_size()
        flat = torch.frombuffer(mapped, dtype=dtype, count=count, offset=base + start) if count else torch.empty(
            0, dtype=dtype)  # fmt: skip
        state[name] = flat.view(entry["shape"])
    return state


def read_hf_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of ``model.safetensors`` or of the shards named by its index file."""
    root = Path(path)
    index = root / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise HFFormatError(f"{index}: not a readable index of weight files ({error!r}); save the model with "
                                "save_pretrained") from None  # fmt: skip
        files = [root / shard for shard in shards]
    else:
        files = [root / "model.safetensors"]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise HFFormatError(f"{root}: no weights ({', '.join(missing)} missing); save with save_pretrained")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(read_safetensors_mapped(file))
    return state


def class_names(config: dict[str, Any]) -> list[str] | None:
    """Class names in id order from ``id2label`` (None when absent)."""
    labels = config.get("id2label")
    if not labels:
        return None
    return [str(labels.get(str(i), labels.get(i, i))) for i in range(len(labels))]
