"""Numeric precision of a run: autocast dtype and (for float16) the gradient scaler."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from harness.parallel.head_steps import one_scale_state

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class Precision:
    """``float32``; ``bfloat16`` (autocast, no scaler); ``float16`` (autocast + GradScaler).

    Autocast runs on the device type the model is on, so ``bfloat16`` really computes matmuls
    and attention in bf16 on CPU as well as on CUDA (CUDA-only autocast is a silent no-op on CPU).
    Weights, optimizer state and the classifier head stay fp32.
    """

    def __init__(self, dtype: str, device: torch.device) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
        self.name = dtype
        self.dtype = DTYPES[dtype]
        self.device = device
        self.scaler = torch.amp.GradScaler(device.type) if dtype == "float16" else None

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Context for forward passes (a no-op for float32)."""
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            yield

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        """The loss to call ``backward`` on: ``loss`` (a scalar, or the ``[heads]`` losses of a grid
        of probe heads) summed and, for float16, scaled (each head by its own scale when the
        scaler keeps one per head: :class:`~harness.parallel.head_steps.HeadScaler`)."""
        if self.scaler is None:
            return loss.sum()
        return self.scaler.scale(loss if getattr(self.scaler, "per_head", False) else loss.sum())

    def state_dict(self) -> dict:
        """Scaler state (empty unless float16)."""
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict) -> None:
        """Restore the scaler state saved by :meth:`state_dict`."""
        if self.scaler is not None and state:
            if isinstance(self.scaler, torch.amp.GradScaler):  # one scale (maybe saved as one per head)
                state = one_scale_state(self.scaler, state)
            self.scaler.load_state_dict(state)


#: modules whose weights and biases autocast casts to its dtype (matmuls and convolutions)
_AUTOCAST_CAST = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def hold_frozen_weights(model: nn.Module, dtype: torch.dtype) -> int:
    """Store the frozen weights that autocast would cast to ``dtype`` in every forward (Linear and
    convolution weights and biases of modules that do not train) in ``dtype`` once: the same
    outputs under autocast (the cast rounds the same way), no cast per forward, half the memory.
    Norms, position tables and anything that trains keep their dtype. Returns the elements cast."""
    cast = 0
    if dtype == torch.float32:
        return cast
    for module in model.modules():
        if isinstance(module, _AUTOCAST_CAST) and not any(p.requires_grad for p in module.parameters()):
            for param in module.parameters(recurse=False):
                if param.dtype == torch.float32:
                    param.data = param.data.to(dtype)
                    cast += param.numel()
    return cast
