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

Reading a directory needs no ``transformers`` (``json`` and ``safetensors`` do it); only
:func:`to_transformers` (the vit family's export hook: our classifier as a checked
``VJEPA2ForVideoClassification``) imports it. Only models with V-JEPA 2's architecture can go
there (RoPE encoder with GELU MLPs, one attentive probe with the encoder's head count, no output
projection, queries attending to the tokens); any other is refused with the reason.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.core.crop import crop_hw
from harness.core.errors import UserError
from harness.models.hf_directory import (  # noqa: F401  (re-exported: the V-JEPA 2 names of these)
    HFFormatError,
    class_names,
    is_hf_directory,
    read_hf_weights,
)
from harness.models.hf_directory import read_hf_config as read_any_hf_config
from harness.models.hf_transformers import (
    TOLERANCE,
    ClipFormat,
    encoder_and_classifier_state,
    logit_difference,
    transformers_module,
)
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


# Harness settings V-JEPA 2's Hugging Face model has no counterpart for: key -> value it needs.
REQUIRED = {
    "use_silu": False,
    "out_layers": None,
    "pooler_output_projection": False,
    "pooler_order": "tokens_first",
    "temporal_pos_embed": False,
}


def incompatibility(model: nn.Module, values: dict[str, Any]) -> str | None:
    """Why ``model`` (built from config ``values``) cannot be a Hugging Face V-JEPA 2 classifier."""
    settings = values.get("model", {})
    encoder = model.encoder
    if not getattr(encoder, "use_rope", False):
        return "its encoder uses sin-cos position tables; Hugging Face's V-JEPA 2 has RoPE only (model.use_rope)"
    if getattr(encoder, "area_blocks", ()):
        return "its encoder uses area attention (model.use_area_attention); Hugging Face's V-JEPA 2 has full attention"
    for key, needed in REQUIRED.items():
        if settings.get(key, needed) != needed:
            return f"model.{key}={settings[key]!r}; Hugging Face's V-JEPA 2 needs {needed!r}"
    heads = settings.get("attn_pooler_heads")
    if heads not in (None, encoder.num_heads):
        return f"model.attn_pooler_heads={heads}: Hugging Face's V-JEPA 2 probe has the encoder's {encoder.num_heads}"
    if hasattr(model.classifier, "heads"):
        return "it has several probe heads: export a run's best head (a run folder or checkpoint does that)"
    return None


def hf_config(model: nn.Module, clip_format: ClipFormat, layer_norm_eps: float):
    """The ``transformers.VJEPA2Config`` of ``model`` (a small predictor: classification skips it)."""
    import transformers

    encoder, names = model.encoder, clip_format.class_names
    mlp = encoder.blocks[0].mlp.fc1
    depth = 1 + len(getattr(model.classifier.pooler, "blocks", None) or [])
    return transformers.VJEPA2Config(
        hidden_size=encoder.embed_dim, num_hidden_layers=encoder.depth, num_attention_heads=encoder.num_heads,
        mlp_ratio=mlp.out_features / encoder.embed_dim, patch_size=encoder.patch_size,
        tubelet_size=encoder.tubelet_size, crop_size=crop_hw(clip_format.crop_size)[0],
        frames_per_clip=clip_format.frames_per_clip, qkv_bias=encoder.blocks[0].attn.qkv.bias is not None,
        num_pooler_layers=depth - 1, layer_norm_eps=layer_norm_eps, num_labels=len(names),
        id2label=dict(enumerate(names)), label2id={name: i for i, name in enumerate(names)},
        pred_hidden_size=64, pred_num_hidden_layers=1, pred_num_attention_heads=4, pred_num_mask_tokens=1,
    )  # fmt: skip


def to_transformers(model: nn.Module, clip_format: ClipFormat, values: dict[str, Any]) -> tuple[nn.Module, Any]:
    """A vit-family classifier (built from config ``values``) as a ``VJEPA2ForVideoClassification``
    that gives its logits, and the ``VJEPA2VideoProcessor`` of ``clip_format``; a user error says
    why not."""
    transformers = transformers_module()
    if reason := incompatibility(model, values):
        raise UserError(f"cannot export as a Hugging Face V-JEPA 2 classifier: {reason}")
    encoder, classifier = encoder_and_classifier_state(model)
    state = {**encoder_state_to_hf(encoder), **classifier_state_to_hf(classifier)}
    # transformers has one LayerNorm epsilon where V-JEPA 2 has 1e-6 in the encoder and 1e-5 in the
    # probe (model.pooler_norm_eps): with both equal the export is exact; else take the one whose
    # model reproduces ours better (usually the probe's: the queries' variance is small).
    candidates = []
    for eps in (model.classifier.pooler.cross_attention_block.norm1.eps, model.encoder.norm.eps):
        theirs = transformers.VJEPA2ForVideoClassification(hf_config(model, clip_format, eps)).eval()
        result = theirs.load_state_dict(state, strict=False)
        missing = [k for k in result.missing_keys if not k.startswith("vjepa2.predictor.")]
        if missing or result.unexpected_keys:
            raise UserError(f"cannot export as a Hugging Face V-JEPA 2 classifier: its weights do not map "
                            f"(missing {missing[:3]}, left over {result.unexpected_keys[:3]})")  # fmt: skip
        candidates.append((logit_difference(model, theirs, clip_format), eps, theirs))
    difference, _, theirs = min(candidates, key=lambda c: c[0])
    if difference > TOLERANCE:
        raise UserError(f"cannot export as a Hugging Face V-JEPA 2 classifier: transformers' model differs from "
                        f"ours by {difference:.2e} on test clips, because transformers has one LayerNorm epsilon "
                        "and this probe's differs from the encoder's; train with model.pooler_norm_eps=1e-6 for an "
                        "exact export")  # fmt: skip
    # Its resize is int(crop x 256/224), fixed by transformers (the harness rounds: 1 px more at some sizes).
    processor = transformers.VJEPA2VideoProcessor(
        crop_size=dict(zip(("height", "width"), crop_hw(clip_format.crop_size))),
        image_mean=list(clip_format.mean), image_std=list(clip_format.std),
    )  # fmt: skip
    return theirs, processor
