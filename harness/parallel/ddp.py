"""DistributedDataParallel: every rank holds the whole model and optimizer; gradients are averaged."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from harness.models.family import DeferredBlocks
from harness.parallel.strategy import DistributedStrategy


class DDPStrategy(DistributedStrategy):
    """Torch DDP. Checkpoints are written by rank 0 (every rank holds the same state)."""

    name = "ddp"

    def prepare(
        self,
        model: nn.Module,
        build_optimizer: Callable[[nn.Module], torch.optim.Optimizer | None],
        deferred: DeferredBlocks | None = None,
    ) -> tuple[nn.Module, torch.optim.Optimizer | None]:
        model = model.to(self.device)
        if any(p.requires_grad for p in model.parameters()):
            # Rank 0's weights are broadcast at construction, so every rank starts identical.
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            # Gradients as views into the all-reduce buckets: no second copy of every gradient.
            # A trained module whose forward can skip some of its parameters (the encoder says so)
            # needs DDP's search for unused parameters, which costs a graph walk per step otherwise.
            unused = any(
                not getattr(module, "uses_every_parameter", True) and any(p.requires_grad for p in module.parameters())
                for module in model.modules()
            )
            model = DistributedDataParallel(
                model, device_ids=device_ids, gradient_as_bucket_view=True, find_unused_parameters=unused
            )
        return model, build_optimizer(model)

    def unwrap(self, model: nn.Module) -> nn.Module:
        return model.module if isinstance(model, DistributedDataParallel) else model

    @contextlib.contextmanager
    def accumulate(self, model: nn.Module, sync: bool) -> Iterator[None]:
        # Skip the gradient all-reduce on all but the last micro-batch of an accumulation.
        if sync or not isinstance(model, DistributedDataParallel):
            yield
        else:
            with model.no_sync():
                yield
