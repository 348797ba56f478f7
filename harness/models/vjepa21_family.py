"""The ``vjepa2.1`` model family: V-JEPA 2.1's video encoders, their sizes and checkpoint layout.

Why a family of its own rather than a version option of ``vit``: a 2.1 encoder is a different
module with different parameters (``norms_block`` instead of ``norm``, ``patch_embed_img``,
modality embeddings, no sin-cos table) and a different function for the same names (RoPE's
channel layout, interpolated positions, per-level norms), so its files and 2.0's are two layouts
that must never load into each other. As families, each keeps one layout reader and one set of
options with no "if version" inside, the registry's names say which version a run uses
(``model.model_name`` alone decides, as for every family), and telling the two layouts apart is
each family's ``layout_problem`` check, before any tensor is copied.

Names are the ones of Meta's hub (``src/hub/backbones.py``): ``vjepa2_1_vit_base_384`` (ViT-B,
80M), ``vjepa2_1_vit_large_384`` (ViT-L, 300M), ``vjepa2_1_vit_giant_384`` (ViT-g, 1B: its
``vit_giant_xformers``, 22 heads) and ``vjepa2_1_vit_gigantic_384`` (ViT-G, 2B: its
``vit_gigantic_xformers``, 26 heads, depth 48), all RoPE, patch 16, tubelet 2, trained at 384 px.

Options (``model.options``; ``use_silu``/``wide_silu`` also at the top of ``model`` as V-JEPA 2's
files put them): ``interpolate_rope``, ``modality_embedding`` and ``image_patch_embed`` (Meta's
``img_temporal_dim_size: 1``), all on as in the released encoders.

Layout read: Meta's files, the encoder under ``ema_encoder`` (the hub's key for the distilled
ViT-B/L), ``target_encoder`` or ``encoder``, keys with ``module.``/``backbone.`` prefixes (its
training's ``DistributedDataParallel(MultiSeqWrapper(encoder))``), or a flat state (harness
files). No Hugging Face layout: no ``transformers`` release reads 2.1 yet.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from harness.models.checkpoint_io import classifier_state, encoder_state, vjepa_version
from harness.models.family import ModelFamily, register_family
from harness.models.vit21 import VisionTransformer21

SIZES: dict[str, dict[str, Any]] = {
    "vjepa2_1_vit_base_384": {"embed_dim": 768, "depth": 12, "num_heads": 12, "mlp_ratio": 4.0},
    "vjepa2_1_vit_large_384": {"embed_dim": 1024, "depth": 24, "num_heads": 16, "mlp_ratio": 4.0},
    "vjepa2_1_vit_giant_384": {"embed_dim": 1408, "depth": 40, "num_heads": 22, "mlp_ratio": 48 / 11},
    "vjepa2_1_vit_gigantic_384": {"embed_dim": 1664, "depth": 48, "num_heads": 26, "mlp_ratio": 64 / 13},
}

#: where Meta's 2.1 files keep the encoder, in the order its hub reads them
ENCODER_KEYS = ("ema_encoder", "target_encoder", "encoder")

#: the option that builds each optional part, and the keys that part's parameters have
OPTIONAL_PARTS = {
    "modality_embedding": ("img_mod_embed", "video_mod_embed"),
    "image_patch_embed": ("patch_embed_img.",),
}


@dataclass
class Vjepa21Options:
    """The vjepa2.1 family's options (Meta's 2.1 ``VisionTransformer`` arguments)."""

    use_silu: bool = False  #: SwiGLU MLP (the released encoders use GELU)
    wide_silu: bool = True  #: SwiGLU width rounding as V-JEPA 2
    interpolate_rope: bool = True  #: RoPE rows/columns on the pretraining grid, whatever the input size
    modality_embedding: bool = True  #: learnt ``video_mod_embed`` / ``img_mod_embed``
    #: the tubelet-1 ``patch_embed_img`` for 1-frame inputs (Meta's ``img_temporal_dim_size: 1``)
    image_patch_embed: bool = True


def layout_problem(state: dict[str, torch.Tensor], encoder: nn.Module) -> str | None:
    """Why ``state`` must not load into this 2.1 ``encoder``, in one line: a V-JEPA 2.0 encoder,
    or a 2.1 file with (or without) an optional part the encoder was built without (or with)."""
    version = vjepa_version(state)
    if version and version[0] == "2.0":
        return (f"a V-JEPA 2.0 encoder ({version[1]}) given to a V-JEPA 2.1 model (vjepa2.1 family): "
                f"use a vit family model, e.g. model.model_name=vit_large_rope")  # fmt: skip
    if not version:  # not a V-JEPA encoder at all: the strict load's report says what is missing
        return None
    built = encoder.state_dict()
    for option, prefixes in OPTIONAL_PARTS.items():
        in_file = any(key.startswith(prefixes) for key in state)
        in_model = any(key.startswith(prefixes) for key in built)
        if in_file != in_model:
            has = "has" if in_file else "has no"
            return (f"this V-JEPA 2.1 encoder {has} {'/'.join(p.rstrip('.') for p in prefixes)}: "
                    f"set model.options.{option}={str(in_file).lower()}")  # fmt: skip
    return None


VJEPA21 = register_family(
    ModelFamily(
        name="vjepa2.1",
        sizes=SIZES,
        build=VisionTransformer21,
        options=Vjepa21Options,
        encoder_states=functools.partial(encoder_state, keys=ENCODER_KEYS),
        classifier_states=classifier_state,
        top_level_options=("use_silu", "wide_silu"),
        layout_problem=layout_problem,
        image_path_option="image_patch_embed",
    )
)
