"""Export to a ``transformers`` video-classification directory of the model's family.

``transformers.AutoModelForVideoClassification.from_pretrained(OUT)`` loads it: ``config.json``
(with ``id2label``), ``model.safetensors`` and the processor's config. A ``vit`` model becomes a
``VJEPA2ForVideoClassification`` and a ``videomae`` one (linear head, no layer scale) a
``VideoMAEForVideoClassification``. For V-JEPA 2 only models
with V-JEPA 2's architecture can go there (RoPE encoder with GELU MLPs, one attentive probe with
the encoder's head count, no output projection, queries attending to the tokens); any other is
refused with the reason. The export is checked before it is written: the ``transformers`` model
must give the harness's logits (1e-4 in fp32) on a random clip, or nothing is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.core.errors import UserError
from harness.export.formats import FILE_MODE, write_description
from harness.export.model_io import Preprocessing
from harness.models import LinearClassifier, hf_vjepa2, videomae
from harness.models.family import family_of_module

TOLERANCE = 1e-4
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
    for key, needed in REQUIRED.items():
        if settings.get(key, needed) != needed:
            return f"model.{key}={settings[key]!r}; Hugging Face's V-JEPA 2 needs {needed!r}"
    heads = settings.get("attn_pooler_heads")
    if heads not in (None, encoder.num_heads):
        return f"model.attn_pooler_heads={heads}: Hugging Face's V-JEPA 2 probe has the encoder's {encoder.num_heads}"
    if hasattr(model.classifier, "heads"):
        return "it has several probe heads: export a run's best head (a run folder or checkpoint does that)"
    return None


def hf_config(model: nn.Module, preprocessing: Preprocessing, layer_norm_eps: float):
    """The ``transformers.VJEPA2Config`` of ``model`` (a small predictor: classification skips it)."""
    import transformers

    encoder, names = model.encoder, preprocessing.class_names
    mlp = encoder.blocks[0].mlp.fc1
    depth = 1 + len(getattr(model.classifier.pooler, "blocks", None) or [])
    return transformers.VJEPA2Config(
        hidden_size=encoder.embed_dim, num_hidden_layers=encoder.depth, num_attention_heads=encoder.num_heads,
        mlp_ratio=mlp.out_features / encoder.embed_dim, patch_size=encoder.patch_size,
        tubelet_size=encoder.tubelet_size, crop_size=preprocessing.crop_size,
        frames_per_clip=preprocessing.frames_per_clip, qkv_bias=encoder.blocks[0].attn.qkv.bias is not None,
        num_pooler_layers=depth - 1, layer_norm_eps=layer_norm_eps, num_labels=len(names),
        id2label=dict(enumerate(names)), label2id={name: i for i, name in enumerate(names)},
        pred_hidden_size=64, pred_num_hidden_layers=1, pred_num_attention_heads=4, pred_num_mask_tokens=1,
    )  # fmt: skip


def export_hf_directory(model: nn.Module, preprocessing: Preprocessing, description: dict, out: Path) -> list[Path]:
    """Write the directory of the model's family (see the module docs); returns the files written."""
    family = family_of_module(model.encoder).name
    if family not in HF_EXPORTERS:
        raise UserError(f"the hf format has no exporter for the {family} model family; export safetensors, pt2 or onnx")
    return HF_EXPORTERS[family](model, preprocessing, description, out)


def encoder_and_classifier_state(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The fp32 state dicts of ``model.encoder`` and ``model.classifier`` (names inside each)."""
    state = {k: v.detach().float() for k, v in model.state_dict().items()}
    parts = [{k.removeprefix(p): v for k, v in state.items() if k.startswith(p)} for p in ("encoder.", "classifier.")]
    return parts[0], parts[1]


def transformers_module():
    """``transformers``, or a user error saying how to install it."""
    try:
        import transformers
    except ImportError:
        raise UserError("the hf format needs the hf extra (transformers): pip install 'harness[hf]'") from None
    return transformers


def export_vjepa2(model: nn.Module, preprocessing: Preprocessing, description: dict, out: Path) -> list[Path]:
    """A ``VJEPA2ForVideoClassification`` directory of a vit-family model."""
    transformers = transformers_module()
    if reason := incompatibility(model, description.get("config", {})):
        raise UserError(f"cannot export as a Hugging Face V-JEPA 2 classifier: {reason}")
    encoder, classifier = encoder_and_classifier_state(model)
    state = {**hf_vjepa2.encoder_state_to_hf(encoder), **hf_vjepa2.classifier_state_to_hf(classifier)}
    # transformers has one LayerNorm epsilon where V-JEPA 2 has 1e-6 in the encoder and 1e-5 in the
    # probe (model.pooler_norm_eps): with both equal the export is exact; else take the one whose
    # model reproduces ours better (usually the probe's: the queries' variance is small).
    candidates = []
    for eps in (model.classifier.pooler.cross_attention_block.norm1.eps, model.encoder.norm.eps):
        theirs = transformers.VJEPA2ForVideoClassification(hf_config(model, preprocessing, eps)).eval()
        result = theirs.load_state_dict(state, strict=False)
        missing = [k for k in result.missing_keys if not k.startswith("vjepa2.predictor.")]
        if missing or result.unexpected_keys:
            raise UserError(f"cannot export as a Hugging Face V-JEPA 2 classifier: its weights do not map "
                            f"(missing {missing[:3]}, left over {result.unexpected_keys[:3]})")  # fmt: skip
        candidates.append((logit_difference(model, theirs, preprocessing), eps, theirs))
    difference, _, theirs = min(candidates, key=lambda c: c[0])
    if difference > TOLERANCE:
        raise UserError(f"cannot export as a Hugging Face V-JEPA 2 classifier: transformers' model differs from "
                        f"ours by {difference:.2e} on test clips, because transformers has one LayerNorm epsilon "
                        "and this probe's differs from the encoder's; train with model.pooler_norm_eps=1e-6 for an "
                        "exact export")  # fmt: skip
    # Its resize is int(crop x 256/224), fixed by transformers (the harness rounds: 1 px more at some sizes).
    processor = transformers.VJEPA2VideoProcessor(
        crop_size={"height": preprocessing.crop_size, "width": preprocessing.crop_size},
        image_mean=list(preprocessing.mean), image_std=list(preprocessing.std),
    )  # fmt: skip
    return save_hf_directory(theirs, processor, preprocessing, description, out)


def save_hf_directory(theirs: nn.Module, processor: Any, preprocessing: Preprocessing, description: dict,
                      out: Path) -> list[Path]:  # fmt: skip
    """``save_pretrained`` of a checked ``transformers`` model and its processor into the new
    (staging) folder ``out``."""
    theirs.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    written = sorted(out.iterdir())
    for path in written:
        path.chmod(FILE_MODE)
    return [*written, write_description(out, preprocessing, description, format="hf")]


def export_videomae(model: nn.Module, preprocessing: Preprocessing, description: dict, out: Path) -> list[Path]:
    """A ``VideoMAEForVideoClassification`` directory of a videomae-family model with a linear head."""
    transformers = transformers_module()
    encoder, head, names = model.encoder, model.classifier, preprocessing.class_names
    settings = description.get("config", {}).get("model", {})
    problems = [
        not isinstance(head, LinearClassifier) and "its classifier is not the linear head (model.classifier=linear)",
        any(block.gamma_1 is not None for block in encoder.blocks) and "it has layer scale (init_values > 0)",
        encoder.out_layers is not None and "it reads multi-level features (model.out_layers)",
        settings.get("clip_aggregation", "auto") not in ("auto", "average_logits")
        and "its clips are aggregated by concat_tokens",
    ]
    if reason := next((p for p in problems if p), None):
        raise UserError(f"cannot export as a Hugging Face VideoMAE classifier: {reason}")
    first = encoder.blocks[0]
    config = transformers.VideoMAEConfig(
        image_size=preprocessing.crop_size, patch_size=encoder.patch_size, num_frames=preprocessing.frames_per_clip,
        tubelet_size=encoder.tubelet_size, hidden_size=encoder.embed_dim, num_hidden_layers=encoder.depth,
        num_attention_heads=encoder.num_heads, intermediate_size=first.mlp.fc1.out_features,
        qv_bias=first.attn.q_bias is not None, use_mean_pooling=head.pooling == "mean",
        layer_norm_eps=first.norm1.eps, num_labels=len(names), id2label=dict(enumerate(names)),
        label2id={name: i for i, name in enumerate(names)},
    )  # fmt: skip
    theirs = transformers.VideoMAEForVideoClassification(config).eval()
    ours_encoder, ours_head = encoder_and_classifier_state(model)
    result = theirs.load_state_dict(videomae.hf_state_from_ours(ours_encoder, ours_head), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise UserError(f"cannot export as a Hugging Face VideoMAE classifier: its weights do not map (missing "
                        f"{result.missing_keys[:3]}, left over {result.unexpected_keys[:3]})")  # fmt: skip
    difference = logit_difference(model, theirs, preprocessing, "pixel_values")
    if difference > TOLERANCE:
        raise UserError(f"cannot export as a Hugging Face VideoMAE classifier: transformers' model differs from ours "
                        f"by {difference:.2e} on test clips (its fc_norm epsilon is 1e-5: train with "
                        "model.pooler_norm_eps=1e-5)")  # fmt: skip
    side = preprocessing.crop_size
    processor = transformers.VideoMAEImageProcessor(
        size={"shortest_edge": round(side * 256 / 224)},
        crop_size={"height": side, "width": side},
        image_mean=list(preprocessing.mean),
        image_std=list(preprocessing.std),
    )
    return save_hf_directory(theirs, processor, preprocessing, description, out)


HF_EXPORTERS = {"vit": export_vjepa2, "videomae": export_videomae}


def logit_difference(model: nn.Module, theirs: nn.Module, preprocessing: Preprocessing,
                     input_name: str = "pixel_values_videos") -> float:  # fmt: skip
    """Largest absolute logit difference between the two models on random clips (``transformers``
    takes ``[B, T, C, H, W]`` under ``input_name``)."""
    p = preprocessing
    clip = torch.randn(8, 3, p.frames_per_clip, p.crop_size, p.crop_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return (model(clip) - theirs(**{input_name: clip.transpose(1, 2)}).logits).abs().max().item()
