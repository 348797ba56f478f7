"""Encoder sizes by name: ``create_encoder("vit_large", patch_size=16, tubelet_size=2, ...)``.

Sizes follow V-JEPA 2. ``vit_giant`` is the 16-head ViT-g of V-JEPA 1 (as specified);
``vit_giant_xformers`` is V-JEPA 2's ViT-g, same widths with 22 heads; the number of heads does
not change any parameter shape but does change the function, so load V-JEPA 2 ViT-g weights into
``vit_giant_xformers(_rope)``. Every size also has a ``_rope`` variant (``use_rope=True``).
"""

from __future__ import annotations

import difflib
from typing import Any

from harness.models.vit import VisionTransformer

ENCODER_SIZES: dict[str, dict[str, Any]] = {
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
ENCODER_SIZES.update({f"{name}_rope": {**size, "use_rope": True} for name, size in list(ENCODER_SIZES.items())})


def encoder_names() -> list[str]:
    """All registered encoder names."""
    return sorted(ENCODER_SIZES)


def encoder_kwargs(name: str, **overrides: Any) -> dict[str, Any]:
    """Constructor arguments of ``name`` with ``overrides`` applied (unknown names suggest one)."""
    if name not in ENCODER_SIZES:
        close = difflib.get_close_matches(name, ENCODER_SIZES, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise KeyError(f"unknown encoder {name!r}{hint} (known: {', '.join(encoder_names())})")
    return {**ENCODER_SIZES[name], **overrides}


def create_encoder(name: str, **overrides: Any) -> VisionTransformer:
    """Build a registered encoder, e.g. ``create_encoder("vit_large", img_size=256, num_frames=16)``."""
    return VisionTransformer(**encoder_kwargs(name, **overrides))
