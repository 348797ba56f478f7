"""Exponential moving average of the trained weights, swapped in for evaluation."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


class ModelEMA:
    """``ema = decay * ema + (1 - decay) * weight`` after every optimizer step.

    Only parameters that train are tracked (a frozen encoder costs no extra memory). Works on
    sharded (DTensor) parameters as well, since it only uses elementwise ops on local tensors.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.names = [name for name, p in model.named_parameters() if p.requires_grad]
        self.shadow = [p.detach().clone() for _, p in self._tracked(model)]

    def _tracked(self, model: nn.Module) -> list[tuple[str, torch.Tensor]]:
        params = dict(model.named_parameters())
        return [(name, params[name]) for name in self.names]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards the current weights."""
        current = [p.detach() for _, p in self._tracked(model)]
        torch._foreach_lerp_(self.shadow, current, 1.0 - self.decay)

    @contextlib.contextmanager
    def applied(self, model: nn.Module) -> Iterator[None]:
        """Run the block with the averaged weights in ``model``; the trained ones come back after."""
        params = [p for _, p in self._tracked(model)]
        backup = [p.detach().clone() for p in params]
        with torch.no_grad():
            for param, average in zip(params, self.shadow):
                param.copy_(average)
        try:
            yield
        finally:
            with torch.no_grad():
                for param, saved in zip(params, backup):
                    param.copy_(saved)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Averaged weights by parameter name."""
        return dict(zip(self.names, self.shadow))

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore :meth:`state_dict` (names must match)."""
        missing = [name for name in self.names if name not in state]
        if missing:
            raise KeyError(f"EMA state lacks {missing[:3]}")
        for average, name in zip(self.shadow, self.names):
            average.copy_(state[name])
