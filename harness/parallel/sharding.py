"""How a strategy lays a parameter out over ranks, and how to put the pieces back together.

Used by whatever keeps per-parameter state of its own next to the model (the EMA of the weights):
it keeps only this rank's piece (``Strategy.local_tensor``), saves it per rank with its
``Strategy.layout``, and :func:`assemble` rebuilds the whole tensor from every rank's piece,
online (all ranks) or offline (consolidation, no process group).

Layouts: ``{"shard": "none"}`` (every rank holds the whole tensor), ``{"shard": "dim0",
"shape": [...], "shards": S}`` (FSDP2: ``Shard(0)`` over groups of ``S`` consecutive ranks, rank
``r`` holding chunk ``r % S`` of ``torch.chunk(S)``; ``S`` is the world size for plain FSDP, a
group's size under hybrid sharding, whose groups hold the same rows; checkpoints from before
HSDP lack ``shards``: all ranks), ``{"shard": "flat", "shape": [...]}`` (ZeRO-3: the flattened
tensor padded to a multiple of the world size, rank ``r`` holding the ``r``-th equal slice).
"""

from __future__ import annotations

import math

import torch


def assemble(pieces: list[torch.Tensor], layout: dict) -> torch.Tensor:
    """The whole tensor from every rank's piece (in rank order) under ``layout``."""
    kind = layout["shard"]
    if kind == "none":
        return pieces[0]
    shape = tuple(layout["shape"])
    if kind == "dim0":  # the first group's pieces (the others are replicas)
        pieces = pieces[: layout.get("shards", len(pieces))]
        return torch.cat([piece.reshape(-1, *shape[1:]) for piece in pieces], dim=0).reshape(shape)
    if kind == "flat":
        return torch.cat([piece.reshape(-1) for piece in pieces])[: math.prod(shape)].reshape(shape)
    raise ValueError(f"unknown parameter layout {layout!r}")


def split(whole: torch.Tensor, layout: dict, rank: int, world_size: int) -> torch.Tensor:
    """This rank's piece of ``whole`` under ``layout`` for ``world_size`` ranks (the inverse of
    :func:`assemble`; used when a checkpoint is resumed on another number of ranks)."""
    kind = layout["shard"]
    if kind == "none":
        return whole
    if kind == "dim0":
        shards = layout.get("shards", world_size)
        index = rank % shards
        chunks = torch.chunk(whole, shards, dim=0)
        return chunks[index] if index < len(chunks) else whole[:0]
    if kind == "flat":
        flat = whole.reshape(-1)
        per_rank = math.ceil(flat.numel() / world_size)
        padded = torch.cat([flat, flat.new_zeros(per_rank * world_size - flat.numel())])
        return padded[rank * per_rank : (rank + 1) * per_rank].clone()
    raise ValueError(f"unknown parameter layout {layout!r}")
