"""The ``vit`` model family: V-JEPA 2's video ViT, its sizes and the layouts its weights come in.

Sizes follow V-JEPA 2. ``vit_giant`` is the 16-head ViT-g of V-JEPA 1 (as specified);
``vit_giant_xformers`` is V-JEPA 2's ViT-g, same widths with 22 heads; the number of heads does
not change any parameter shape but does change the function, so load V-JEPA 2 ViT-g weights into
``vit_giant_xformers(_rope)``. Every size also has a ``_rope`` variant (``use_rope=True``).

Its options are V-JEPA 2's own ``model`` keys (``uniform_power``, ``use_rope``, ``use_silu``,
``wide_silu``, and the area attention keys ``use_area_attention``, ``area_attention_layers``,
``area_spatial_splits``, ``area_temporal_splits``, ``area_residual_scale``), read from the top
level of the section because V-JEPA 2's files put them there.
Layouts read: V-JEPA 2 ``.pt`` files and harness files (:mod:`harness.models.checkpoint_io`),
Hugging Face V-JEPA 2 directories (:mod:`harness.models.hf_vjepa2`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.models import hf_vjepa2
from harness.models.checkpoint_io import classifier_state, encoder_state, refuse_vjepa21_state
from harness.models.family import HFLayout, ModelFamily, register_family
from harness.models.vit import VisionTransformer

SIZES: dict[str, dict[str, Any]] = {
    "vit_tiny": {"embed_dim": 192, "depth": 12, "num_heads": 3, "mlp_ratio": 4.0},
    "vit_small": {"embed_dim": 384, "depth": 12, "num_heads": 6, "mlp_ratio": 4.0},
    "vit_base": {"embed_dim": 768, "depth": 12, "num_heads": 12, "mlp_ratio": 4.0},
    "vit_large": {"embed_dim": 1024, "depth": 24, "num_heads": 16, "mlp_ratio": 4.0},
    "vit_huge": {"embed_dim": 1280, "depth": 32, "num_heads": 16, "mlp_ratio": 4.0},
    "vit_giant": {"embed_dim": 1408, "depth": 40, "num_heads": 16, "mlp_ratio": 48 / 11},
    "vit_giant_xformers": {"embed_dim": 1408, "depth": 40, "num_heads": 22, "mlp_ratio": 48 / 11},
    "vit_gigantic": {"embed_dim": 1664, "depth": 48, "num_heads": 16, "mlp_ratio": 64 / 13},
    "vit_gigantic_xformers": {"embed_dim": 1664, "depth": 48, "num_heads": 26, "mlp_ratio": 64 / 13},
}
SIZES.update({f"{name}_rope": {**size, "use_rope": True} for name, size in list(SIZES.items())})
#: V-JEPA 2's area attention keys (``model.<key>`` in its train files, ``pretrain_kwargs.encoder`` in its eval files)
AREA_OPTIONS = ("use_area_attention", "area_attention_layers", "area_spatial_splits", "area_temporal_splits",
                "area_residual_scale")  # fmt: skip


@dataclass
class VitOptions:
    """The vit family's options: V-JEPA 2's ``model`` keys of the same names."""

    uniform_power: bool = False  #: sin-cos channel split
    use_rope: bool = False  #: rotary positions (a ``*_rope`` name sets it)
    use_silu: bool = False  #: SwiGLU MLP
    wide_silu: bool = True  #: SwiGLU width rounding as V-JEPA 2
    use_area_attention: bool = False  #: V-JEPA 2's spatiotemporal area attention (RoPE only)
    area_attention_layers: list | None = None  #: blocks ``[start, end)`` with it (default ``[0, int(0.75 depth)]``)
    area_spatial_splits: int = 2  #: bands of patch rows (columns are never split)
    area_temporal_splits: int = 2  #: bands of time steps
    area_residual_scale: float = 1.0  #: multiplies an area block's attention output before its projection


def _hf_classifier_options(config: dict[str, Any]) -> dict[str, Any]:
    options = hf_vjepa2.classifier_options(config)
    options.pop("num_classes")
    return {"kind": "attentive", "order": "tokens_first", **options}


VIT = register_family(
    ModelFamily(
        name="vit",
        sizes=SIZES,
        build=VisionTransformer,
        options=VitOptions,
        encoder_states=encoder_state,
        classifier_states=classifier_state,
        hf=HFLayout(
            "vjepa2",
            hf_vjepa2.encoder_options,
            hf_vjepa2.encoder_state_from_hf,
            hf_vjepa2.classifier_state_from_hf,
            _hf_classifier_options,
            clip_shape=lambda config: (config.get("frames_per_clip", 16), config.get("crop_size", 256)),
            model_name="vit_large_rope",
            to_transformers=hf_vjepa2.to_transformers,
        ),
        top_level_options=("uniform_power", "use_rope", "use_silu", "wide_silu", *AREA_OPTIONS),
        layout_problem=refuse_vjepa21_state,
    )
)
