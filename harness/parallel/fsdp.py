"""FSDP2 (``fully_shard``): parameters, gradients and optimizer state sharded over ranks.

Each transformer block (encoder and pooler) is its own FSDP unit, then the root; activation
checkpointing and compile were applied to the blocks before (torchtitan's order). The encoder's
blocks arrive on the meta device: each is sharded, then only this rank's shards are allocated
and filled from the block made in full on the host (initialised, pretrained tensors copied), one
block at a time (:mod:`harness.parallel.meta_init`). Checkpoints are DCP folders: every rank writes its
shards, and a checkpoint loads on any number of ranks (DCP reshards).

Hybrid sharding (HSDP, ``distributed.fsdp.shard_group_size``): a 2-D device mesh ``(replicate,
shard)``; each group of consecutive ranks (a node, with ``auto``) holds one sharded copy, so the
all-gathers and reduce-scatters stay inside the group, and only the gradient all-reduce between
the groups' matching ranks crosses the network, once per optimizer step (with gradient
accumulation, on the last micro-batch; a skipped step drops what the earlier ones reduced). Every
DTensor is then ``(Replicate(), Shard(0))``: its local tensor is its rows along the shard
dimension, what the 1-D layout's code already takes (the meta build, the EMA, norms reduced by
``full_tensor``, which sums the shard dimension only).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import CPUOffloadPolicy, FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor

from harness.core.errors import UserError
from harness.core.fileio import write_atomic
from harness.models.family import DeferredBlocks
from harness.parallel.distributed import process_info
from harness.parallel.meta_init import copy_into_shards, full_blocks, move_materialised
from harness.parallel.precision import Precision
from harness.parallel.strategy import DistributedStrategy

EXTRA_FILE = "extra.pt"
DCP_FOLDER = "dcp"


def fsdp_units(model: nn.Module) -> list[nn.Module]:
    """The modules sharded as units: every block of the encoder and of the pooler."""
    units: list[nn.Module] = []
    for name in ("encoder", "classifier"):
        part = getattr(model, name, None)
        part = getattr(part, "pooler", part) if name == "classifier" else part
        blocks = getattr(part, "blocks", None)
        if blocks is not None:
            units.extend(blocks)
    return units


def hybrid_mesh_shape(
    shard_group_size: int | str | None, world_size: int, local_world_size: int | None
) -> tuple[int, int] | None:
    """``(replicate, shard)``: how many groups of how many ranks hybrid sharding uses, or None for
    plain FSDP over all ranks (``shard_group_size`` null, or as large as the world).

    ``auto`` or 0 is ``local_world_size`` (the launcher's processes per node). Raises a
    :class:`UserError` naming the key when the world does not split into such groups."""
    if shard_group_size is None:
        return None
    key = f"distributed.fsdp.shard_group_size={shard_group_size}"
    size = local_world_size if shard_group_size in ("auto", 0) else int(shard_group_size)
    if size is None:
        raise UserError(f"{key}: the launcher did not say how many processes run per node (LOCAL_WORLD_SIZE); "
                        "give the group size as a number")  # fmt: skip
    if size < 1 or world_size % size:
        raise UserError(f"{key}: {world_size} ranks do not split into groups of {size}; "
                        "use a divisor of the world size")  # fmt: skip
    return None if size == world_size else (world_size // size, size)


def _local_part(full: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``full`` as ``target`` holds it: a DTensor split like it (locally: every rank has ``full``)."""
    if isinstance(target, DTensor):
        return distribute_tensor(full.to(target.device), target.device_mesh, target.placements, src_data_rank=None)
    return full


def _sharded_state(model: nn.Module, optimizer) -> dict[str, Any]:
    """This rank's shards of the model (and optimizer) state, keyed by parameter names."""
    if optimizer is None:
        return {"model": get_state_dict(model, [])[0]}
    model_state, optimizer_state = get_state_dict(model, optimizer)
    return {"model": model_state, "optimizer": optimizer_state}


class FSDPStrategy(DistributedStrategy):
    """Torch FSDP2.

    Args:
        reshard_after_forward: free gathered parameters after forward (less memory, one more
            all-gather in backward).
        cpu_offload: keep sharded parameters, gradients and optimizer state in host memory.
        reduce_dtype: gradient reduction dtype (``float32`` default; ``bfloat16`` halves traffic).
        param_dtype: compute dtype of gathered parameters (default: the run's dtype).
        shard_group_size: hybrid sharding: shard within groups of this many consecutive ranks,
            replicate across the groups (``auto`` or 0: ``local_world_size``; None: plain FSDP).
        local_world_size: processes per node (default: what the launcher says).
    """

    name = "fsdp"

    def __init__(
        self,
        device: torch.device,
        precision: Precision,
        rank: int,
        world_size: int,
        reshard_after_forward: bool = True,
        cpu_offload: bool = False,
        reduce_dtype: str = "float32",
        param_dtype: str | None = None,
        shard_group_size: int | str | None = None,
        local_world_size: int | None = None,
    ) -> None:
        super().__init__(device, precision, rank, world_size)
        local = local_world_size if local_world_size is not None else process_info().local_world_size
        shape = hybrid_mesh_shape(shard_group_size, world_size, local)
        # None: fully_shard's default, a 1-D mesh of all ranks (what every run had before HSDP)
        self.mesh: DeviceMesh | None = (
            init_device_mesh(device.type, shape, mesh_dim_names=("replicate", "shard")) if shape else None
        )
        dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
        self.mixed_precision = MixedPrecisionPolicy(
            param_dtype=dtypes[param_dtype] if param_dtype else precision.dtype, reduce_dtype=dtypes[reduce_dtype]
        )
        self.reshard_after_forward = reshard_after_forward
        # pinned host memory needs CUDA; on a CPU run the offload path still runs, unpinned
        self.offload = CPUOffloadPolicy(pin_memory=device.type == "cuda") if cpu_offload else None

    def prepare(
        self,
        model: nn.Module,
        build_optimizer: Callable[[nn.Module], torch.optim.Optimizer | None],
        deferred: DeferredBlocks | None = None,
    ) -> tuple[nn.Module, torch.optim.Optimizer | None]:
        templates = [copy.deepcopy(block) for block in model.encoder.blocks] if deferred else None
        if self.offload is None:
            move_materialised(model, self.device)
        options: dict[str, Any] = {"mp_policy": self.mixed_precision}
        if self.mesh is not None:
            options["mesh"] = self.mesh
        if self.offload is not None:
            options["offload_policy"] = self.offload
        for unit in fsdp_units(model):
            fully_shard(unit, reshard_after_forward=self.reshard_after_forward, **options)
        fully_shard(model, reshard_after_forward=self.reshard_after_forward, **options)
        if deferred:  # allocate this rank's shards of each block, then fill them from the full block
            blocks = model.encoder.blocks
            device = "cpu" if self.offload is not None else self.device
            for index, full in full_blocks(model, deferred, templates):
                blocks[index].to_empty(device=device)
                copy_into_shards(blocks[index], full, _local_part)
                del full  # one full block alive at a time
        return model, build_optimizer(model)

    shards_parameters = True
    builds_sharded = True
    holds_frozen_weights = False

    def local_tensor(self, param: torch.Tensor) -> torch.Tensor:
        # The DTensor's own local shard (not a copy), so writes reach the sharded parameter.
        return param._local_tensor if isinstance(param, DTensor) else param

    @property
    def description(self) -> str:
        if self.mesh is None:
            return self.name
        groups, size = self.mesh.shape
        return f"{self.name} hybrid ({groups} groups of {size} ranks: sharded in a group, replicated across)"

    def layout(self, param: torch.Tensor) -> dict:
        if not isinstance(param, DTensor):
            return {"shard": "none"}
        # the shard dimension is the mesh's last (HSDP's replicas hold the same rows)
        return {"shard": "dim0", "shape": list(param.shape), "shards": param.device_mesh.shape[-1]}

    @contextlib.contextmanager
    def writing_local(self, model: nn.Module) -> Iterator[None]:
        # A module left unsharded (reshard_after_forward=False after an eval forward) would not
        # gather the written shards again: reshard everything first.
        for module in model.modules():
            if isinstance(module, FSDPModule):
                module.reshard()
        yield

    @property
    def defers_all_reduce(self) -> bool:
        """HSDP with gradient accumulation: each micro-batch's gradients are reduce-scattered
        inside the group (summed into a shard-sized buffer) and only the last one all-reduces
        between the groups, so the traffic between nodes is once per optimizer step. Where torch
        lacks ``FSDPModule.reset_iter_state`` (2.13 and 2.14 have it), which drops those sums when
        a step is skipped, every micro-batch all-reduces. (Plain FSDP reduce-scatters every
        micro-batch: skipping that would hold whole gradients.)"""
        return self.mesh is not None and hasattr(FSDPModule, "reset_iter_state")

    @contextlib.contextmanager
    def accumulate(self, model: nn.Module, sync: bool) -> Iterator[None]:
        if self.defers_all_reduce and isinstance(model, FSDPModule):
            model.set_requires_all_reduce(sync)
        yield

    def skip_micro_batch(self, model: nn.Module) -> None:
        # The step is discarded (no backward for this micro-batch): the earlier micro-batches'
        # sums wait in FSDP2 for an all-reduce that this step will not run, and would join the
        # next step's gradients. Drop them (and reshard after this forward).
        if self.defers_all_reduce and isinstance(model, FSDPModule):
            model.reset_iter_state()

    def full_norm(self, norm: torch.Tensor) -> torch.Tensor:
        return norm.full_tensor() if isinstance(norm, DTensor) else norm

    def full_model_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        options = StateDictOptions(full_state_dict=True, cpu_offload=False)
        return {k: v.detach().cpu() for k, v in get_model_state_dict(model, options=options).items()}

    def save_state(
        self, folder: Path, model: nn.Module, optimizer, extra: dict[str, Any], trainable_only: bool
    ) -> None:
        """Every rank writes its shards (DCP); rank 0 writes the harness state (``extra``)."""
        state = _sharded_state(model, optimizer)
        dcp.save(state, checkpoint_id=str(folder / DCP_FOLDER))
        if self.is_main:
            write_atomic(folder / EXTRA_FILE, lambda handle: torch.save(extra, handle))

    def load_state(self, folder: Path, model: nn.Module, optimizer) -> dict[str, Any]:
        """Load shards for the current number of ranks (DCP reshards when it changed)."""
        state = _sharded_state(model, optimizer)
        dcp.load(state, checkpoint_id=str(folder / DCP_FOLDER))
        set_state_dict(
            model,
            optimizer if optimizer is not None else [],
            model_state_dict=state["model"],
            optim_state_dict=state.get("optimizer", {}),
            options=StateDictOptions(strict=True),
        )
        return torch.load(folder / EXTRA_FILE, map_location="cpu", weights_only=True)
