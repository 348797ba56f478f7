"""Activation checkpointing applied from outside the model (never in model constructors).

Apply it before ``torch.compile`` and before FSDP2 sharding (torchtitan's order): the wrapped
blocks are then the units that get compiled and sharded.
"""

from __future__ import annotations

from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointImpl, checkpoint_wrapper


def apply_activation_checkpointing(blocks: nn.ModuleList, every: int = 1) -> int:
    """Recompute every ``every``-th block of ``blocks`` in backward instead of storing activations.

    ``every=1`` checkpoints all blocks (least memory); ``every=2`` every second one, and so on.
    Parameter names are unchanged in ``state_dict`` (the wrapper strips its own prefix), so
    checkpoints stay loadable either way. Returns the number of blocks wrapped.
    """
    if every < 1:
        raise ValueError(f"activation checkpointing interval must be >= 1, got {every}")
    wrapped = 0
    for index, block in enumerate(blocks):
        if index % every == 0:
            blocks[index] = checkpoint_wrapper(block, checkpoint_impl=CheckpointImpl.NO_REENTRANT)
            wrapped += 1
    return wrapped
