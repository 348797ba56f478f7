"""Numeric precision of a run: autocast dtype and (for float16) the gradient scaler."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

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
        """The loss to call ``backward`` on (scaled for float16)."""
        return self.scaler.scale(loss) if self.scaler is not None else loss

    def state_dict(self) -> dict:
        """Scaler state (empty unless float16)."""
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict) -> None:
        """Restore the scaler state saved by :meth:`state_dict`."""
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
