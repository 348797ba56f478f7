"""Hugging Face V-JEPA 2 directories (``config.json`` + safetensors) as harness weights.

``transformers`` ships V-JEPA 2 as ``VJEPA2Model`` (encoder + predictor) and
``VJEPA2ForVideoClassification`` (the same under ``vjepa2.``, plus ``pooler.*`` and
``classifier.*``). The computation equals ours; only the layout differs:

* encoder: separate ``query``/``key``/``value`` projections (ours: one ``qkv``, rows stacked
  q, k, v), ``encoder.layer.i`` for ``blocks.i``, ``encoder.layernorm`` for ``norm``; always RoPE.
* pooler: ``self_attention_layers`` run over the tokens before the cross-attention, as V-JEPA 2's
  ``tokens_first`` probes; ``k_proj``/``v_proj`` stack into our ``kv``; ``out_proj`` is
  ``attn.proj``; the cross-attention has no output projection (as V-JEPA 2); its LayerNorms
  use ``config.layer_norm_eps`` (1e-6) where V-JEPA 2's probes use 1e-5, so a classifier built
  from a Hugging Face directory takes that epsilon.
* ``classifier`` is our ``linear``; class names come from ``config.id2label``.

Nothing here imports ``transformers``: a directory is read with ``json`` and ``safetensors``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from harness.models.hf_directory import (  # noqa: F401  (re-exported: the V-JEPA 2 names of these)
    HFFormatError,
    class_names,
    is_hf_directory,
    read_hf_weights,
)
from harness.models.hf_directory import read_hf_config as read_any_hf_config
from harness.models.state_names import rename, rename_rules, split_parts, stack_parts


def read_hf_config(path: str | Path) -> dict[str, Any]:
    """The directory's ``config.json``; it must describe a V-JEPA 2 model."""
    return read_any_hf_config(path, ("vjepa2",))


def encoder_options(config: dict[str, Any]) -> dict[str, Any]:
    """Our ``VisionTransformer`` arguments for a Hugging Face V-JEPA 2 config."""
    if config.get("hidden_act", "gelu") != "gelu":
        raise HFFormatError(f"hidden_act {config['hidden_act']!r} is not supported (only gelu)")
    return {
        "embed_dim": config["hidden_size"],
        "depth": config["num_hidden_layers"],
        "num_heads": config["num_attention_heads"],
        "mlp_ratio": float(config.get("mlp_ratio", 4.0)),
        "patch_size": config.get("patch_size", 16),
        "tubelet_size": config.get("tubelet_size", 2),
        "in_chans": config.get("in_chans", 3),
        "qkv_bias": config.get("qkv_bias", True),
        "use_rope": True,
    }


def classifier_options(config: dict[str, Any]) -> dict[str, Any]:
    """Our ``AttentiveClassifier`` arguments (heads, depth, norm epsilon, classes)."""
    labels = config.get("id2label") or {}
    return {
        "num_heads": config["num_attention_heads"],
        "depth": config.get("num_pooler_layers", 3) + 1,
        "norm_eps": config.get("layer_norm_eps", 1e-6),
        "num_classes": len(labels) if labels else config.get("num_labels", 2),
    }


# Parameter names: (Hugging Face, ours); {i} and {j} stand for numbers. Both directions of the
# conversion are made from these pairs, so they cannot drift apart.
_ENCODER_NAMES = (
    ("encoder.embeddings.patch_embeddings.proj.", "patch_embed.proj."),
    ("encoder.layer.{i}.attention.proj.", "blocks.{i}.attn.proj."),
    *((f"encoder.layer.{{i}}.{part}.", f"blocks.{{i}}.{part}.") for part in ("norm1", "norm2", "mlp.fc1", "mlp.fc2")),
    ("encoder.layernorm.", "norm."),
)
_POOLER_NAMES = (
    ("pooler.query_tokens", "pooler.query_tokens"),
    ("pooler.cross_attention_layer.layer_norm{i}.", "pooler.cross_attention_block.norm{i}."),
    ("pooler.cross_attention_layer.cross_attn.q_proj.", "pooler.cross_attention_block.xattn.q."),
    ("pooler.cross_attention_layer.mlp.", "pooler.cross_attention_block.mlp."),
    ("pooler.self_attention_layers.{i}.layer_norm{j}.", "pooler.blocks.{i}.norm{j}."),
    ("pooler.self_attention_layers.{i}.self_attn.out_proj.", "pooler.blocks.{i}.attn.proj."),
    ("pooler.self_attention_layers.{i}.mlp.", "pooler.blocks.{i}.mlp."),
    ("classifier.", "linear."),
)


_ENCODER_RENAMES, _ENCODER_TO_HF = rename_rules(_ENCODER_NAMES, False), rename_rules(_ENCODER_NAMES, True)
_POOLER_RENAMES, _POOLER_TO_HF = rename_rules(_POOLER_NAMES, False), rename_rules(_POOLER_NAMES, True)


def encoder_state_from_hf(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our encoder state dict from a ``VJEPA2Model`` / ``VJEPA2ForVideoClassification`` one
    (the predictor and any head are left out)."""
    state = {key.removeprefix("vjepa2."): value for key, value in state.items() if not key.startswith("predictor.")}
    state = {key: value for key, value in state.items() if key.startswith("encoder.")}
    out: dict[str, torch.Tensor] = {}
    layers = sorted({int(m.group(1)) for k in state if (m := re.match(r"encoder\.layer\.(\d+)\.", k))})
    for layer in layers:
        stacked = stack_parts(state, f"encoder.layer.{layer}.attention.", ("query", "key", "value"))
        out.update({f"blocks.{layer}.attn.qkv.{kind}": tensor for kind, tensor in stacked.items()})
    out.update(rename(state, _ENCODER_RENAMES))
    return out


def classifier_state_from_hf(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our ``AttentiveClassifier`` state dict from a ``VJEPA2ForVideoClassification`` one."""
    state = {k: v for k, v in state.items() if k.startswith(("pooler.", "classifier."))}
    if not state:
        raise HFFormatError("no pooler/classifier weights: the directory holds an encoder (VJEPA2Model) only")
    out: dict[str, torch.Tensor] = {}
    cross = stack_parts(state, "pooler.cross_attention_layer.cross_attn.", ("k_proj", "v_proj"))
    out.update({f"pooler.cross_attention_block.xattn.kv.{kind}": tensor for kind, tensor in cross.items()})
    layers = sorted({int(m.group(1)) for k in state if (m := re.match(r"pooler\.self_attention_layers\.(\d+)\.", k))})
    for layer in layers:
        prefix = f"pooler.self_attention_layers.{layer}.self_attn."
        stacked = stack_parts(state, prefix, ("q_proj", "k_proj", "v_proj"))
        out.update({f"pooler.blocks.{layer}.attn.qkv.{kind}": tensor for kind, tensor in stacked.items()})
    out.update(rename(state, _POOLER_RENAMES))
    return out


def encoder_state_to_hf(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A ``VJEPA2ForVideoClassification`` encoder state (``vjepa2.encoder.*``) from ours; the
    inverse of :func:`encoder_state_from_hf`."""
    state = dict(state)
    out: dict[str, torch.Tensor] = {}
    for layer in sorted({int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.attn\.qkv\.", k))}):
        prefix = f"encoder.layer.{layer}.attention."
        out.update(split_parts(state, f"blocks.{layer}.attn.qkv", prefix, ("query", "key", "value")))
    out.update(rename(state, _ENCODER_TO_HF))
    return {f"vjepa2.{key}": value for key, value in out.items()}


def classifier_state_to_hf(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The pooler and classifier of a ``VJEPA2ForVideoClassification`` from our attentive
    classifier; the inverse of :func:`classifier_state_from_hf`."""
    state = dict(state)
    out = split_parts(state, "pooler.cross_attention_block.xattn.kv", "pooler.cross_attention_layer.cross_attn.",
                 ("k_proj", "v_proj"))  # fmt: skip
    for layer in sorted({int(m.group(1)) for k in state if (m := re.match(r"pooler\.blocks\.(\d+)\.attn\.qkv", k))}):
        prefix = f"pooler.self_attention_layers.{layer}.self_attn."
        out.update(split_parts(state, f"pooler.blocks.{layer}.attn.qkv", prefix, ("q_proj", "k_proj", "v_proj")))
    out.update(rename(state, _POOLER_TO_HF))
    return out
