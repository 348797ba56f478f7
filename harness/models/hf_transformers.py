"""What every family's conversion into a ``transformers`` classifier shares (the ``to_transformers``
hook of its :class:`harness.models.family.HFLayout`): the package itself, our fp32 states, and the
logit check that a conversion must pass before :mod:`harness.export.hf` writes anything.

The families' conversions live next to their layouts (:mod:`harness.models.hf_vjepa2`,
:mod:`harness.models.videomae`), below the export command, so that ``models/`` never imports
``export/``; the export writes the directory and its ``model.json``.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from harness.core.crop import crop_hw
from harness.core.errors import UserError

TOLERANCE = 1e-4  #: largest logit difference (fp32) allowed between ``transformers``' model and ours


class ClipFormat(Protocol):
    """What a conversion reads of the export's preprocessing (:class:`harness.export.Preprocessing`)."""

    frames_per_clip: int  #: frames per clip
    crop_size: int | list[int]  #: the crop in pixels: one side (square) or [height, width]
    class_names: list[str]  #: name of logit ``i``
    mean: tuple[float, ...]  #: per-channel normalisation
    std: tuple[float, ...]


def transformers_module():
    """``transformers``, or a user error saying how to install it."""
    try:
        import transformers
    except ImportError:
        raise UserError("the hf format needs the hf extra (transformers): pip install 'harness[hf]'") from None
    return transformers


def encoder_and_classifier_state(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The fp32 state dicts of ``model.encoder`` and ``model.classifier`` (names inside each)."""
    state = {k: v.detach().float() for k, v in model.state_dict().items()}
    parts = [{k.removeprefix(p): v for k, v in state.items() if k.startswith(p)} for p in ("encoder.", "classifier.")]
    return parts[0], parts[1]


def logit_difference(model: nn.Module, theirs: nn.Module, clip_format: ClipFormat,
                     input_name: str = "pixel_values_videos") -> float:  # fmt: skip
    """Largest absolute logit difference between the two models on random clips (``transformers``
    takes ``[B, T, C, H, W]`` under ``input_name``)."""
    p = clip_format
    clip = torch.randn(8, 3, p.frames_per_clip, *crop_hw(p.crop_size), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return (model(clip) - theirs(**{input_name: clip.transpose(1, 2)}).logits).abs().max().item()
