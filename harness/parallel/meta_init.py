"""Materialising an encoder whose blocks were built on the meta device, one block at a time.

With ``fsdp`` and DeepSpeed ZeRO-3 the trainer builds the encoder's blocks on the meta device
(:class:`harness.models.family.DeferredBlocks`): no rank ever holds the whole model. Each block is
made in full on the host (its family's initialisation from its own seed, then its pretrained
tensors, read from a memory-mapped file), handed to the strategy's sharding, and dropped before
the next one: peak host memory is the stem, the classifier and one block, plus this rank's
shards. The weights equal a single-process build's for the same seed (each unit has its own seed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import nn

from harness.models.family import DeferredBlocks


def move_materialised(model: nn.Module, device: torch.device) -> None:
    """``model.to(device)`` for every tensor that is not on the meta device."""
    model._apply(lambda tensor: tensor if tensor.is_meta else tensor.to(device))


def full_blocks(model: nn.Module, deferred: DeferredBlocks, templates: list[nn.Module] | None = None,
                device: torch.device | str = "cpu", fill: bool = True) -> Iterator[tuple[int, nn.Module]]:  # fmt: skip
    """Each encoder block made in full on ``device``, in order, in place, as ``deferred`` says: the
    encoder's own meta blocks, or ``templates`` (meta copies of them taken before a strategy
    changed the blocks). Without ``fill`` the block's memory is allocated but not initialised (a
    rank that receives the values from another). A template is let go once its turn is over, so
    that only one full block is alive at a time."""
    encoder = model.encoder
    blocks = templates if templates is not None else list(encoder.blocks)
    for index in range(len(blocks)):
        block = blocks[index]
        block.to_empty(device=device)
        if fill:
            deferred.fill(encoder, index, block)
        yield index, block
        if templates is not None:
            templates[index] = block = None
    deferred.state = None  # the pretrained blocks' tensors are in the shards now: let them go


def copy_into_shards(
    target: nn.Module, full: nn.Module, shard: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
) -> None:
    """Copy every parameter and buffer of ``full`` into ``target``'s (same names), each through
    ``shard(full_tensor, target_tensor)`` (the part of it the target holds)."""
    values = dict(full.named_parameters()) | dict(full.named_buffers())
    with torch.no_grad():
        for name, tensor in [*target.named_parameters(), *target.named_buffers()]:
            tensor.copy_(shard(values[name], tensor))
