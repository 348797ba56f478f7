"""Encoders by name across the registered families: ``create_encoder("vit_large", img_size=256)``.

The families themselves live in their own files (:mod:`harness.models.vit_family`,
:mod:`harness.models.vjepa21_family`, :mod:`harness.models.videomae`) and register in
:mod:`harness.models.family`; importing :mod:`harness.models` registers the built-in ones.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from harness.models.family import FamilyError, build_encoder, family_of, model_names


def encoder_names() -> list[str]:
    """All registered encoder names, of every family."""
    return model_names()


def encoder_kwargs(name: str, **overrides: Any) -> dict[str, Any]:
    """Constructor arguments of ``name`` with ``overrides`` applied (an unknown name suggests one)."""
    try:
        family = family_of(name)
    except FamilyError as error:
        raise KeyError(str(error)) from None
    return {**family.sizes[name], **overrides}


def create_encoder(name: str, **overrides: Any) -> nn.Module:
    """Build a registered encoder with constructor ``overrides``, e.g.
    ``create_encoder("vit_large", img_size=256, num_frames=16)``."""
    return build_encoder(family_of(name).build, encoder_kwargs(name, **overrides))
