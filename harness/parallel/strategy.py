"""The one interface between the training loop and how processes and devices are used.

The trainer only calls :class:`Strategy` methods: wrapping the model and building the optimizer,
backward, the optimizer step (with clipping and loss scaling), gradient-accumulation context,
collectives for metrics, and saving/loading the model and optimizer state inside a checkpoint
folder. A strategy (single process here; DDP, FSDP2 and DeepSpeed behind the same methods)
changes nothing in the loop.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from harness.core.errors import UserError
from harness.core.fileio import write_atomic
from harness.models.checkpoint_io import CheckpointError
from harness.models.family import DeferredBlocks
from harness.parallel.head_steps import clip_per_head, drop_head_gradients
from harness.parallel.precision import Precision

STATE_FILE = "state.pt"


WRAPPER_TOKENS = re.compile(r"(_orig_mod\.|_checkpoint_wrapped_module\.|module\.)")


def clean_name(name: str) -> str:
    """A parameter name without wrapper tokens (``encoder.blocks.3.attn.qkv.weight``): compile,
    activation checkpointing and DDP/DeepSpeed wrappers add them to ``named_parameters()``."""
    return WRAPPER_TOKENS.sub("", name)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto``: this rank's GPU when CUDA is available, else the CPU."""
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError("meta.device=cuda but CUDA is not available on this machine")
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


class Strategy:
    """Single-process training; the base of the distributed strategies.

    Args:
        device: where the model runs.
        precision: autocast dtype and loss scaler.
        rank, world_size, local_rank: this process's place in the job.
    """

    name = "single"

    def __init__(self, device: torch.device, precision: Precision, rank: int = 0, world_size: int = 1) -> None:
        self.device, self.precision = device, precision
        self.rank, self.world_size = rank, world_size

    @property
    def description(self) -> str:
        """The strategy and its layout in a few words, for the start-up summary."""
        return self.name

    @property
    def is_main(self) -> bool:
        """True on the process that writes shared files (rank 0)."""
        return self.rank == 0

    def prepare(
        self,
        model: nn.Module,
        build_optimizer: Callable[[nn.Module], torch.optim.Optimizer | None],
        deferred: DeferredBlocks | None = None,
    ) -> tuple[nn.Module, torch.optim.Optimizer | None]:
        """Move/wrap the model, then build its optimizer over the wrapped parameters. ``deferred``:
        the encoder's blocks are still on the meta device and this is how to make them (only for
        a strategy that :attr:`builds_sharded`)."""
        model = model.to(self.device)
        return model, build_optimizer(model)

    def unwrap(self, model: nn.Module) -> nn.Module:
        """The plain module (for state dicts and attribute access)."""
        return model

    #: whether parameters are split over ranks (then per-parameter state is kept per rank)
    shards_parameters = False
    #: whether :meth:`prepare` materialises meta-device encoder blocks itself, one shard per rank
    #: (:mod:`harness.parallel.meta_init`); the trainer then builds the blocks on the meta device
    builds_sharded = False
    #: whether a frozen encoder's matmul weights may be held in the autocast dtype
    #: (:func:`~harness.parallel.precision.hold_frozen_weights`); sharding strategies cast on their
    #: own (FSDP2 gathers in ``param_dtype``, DeepSpeed keeps the whole model in bf16/fp16)
    holds_frozen_weights = True

    def local_tensor(self, param: torch.Tensor) -> torch.Tensor:
        """The part of ``param`` this rank holds (the whole tensor when nothing is sharded);
        writing into it changes what the model computes with."""
        return param

    def layout(self, param: torch.Tensor) -> dict:
        """How ``param`` is split over ranks (see :mod:`harness.parallel.sharding`)."""
        return {"shard": "none"}

    def parameter_numel(self, param: torch.Tensor) -> int:
        """Elements of the whole ``param``, however it is sharded."""
        return param.numel()

    def parameter_shape(self, param: torch.Tensor) -> tuple[int, ...]:
        """Shape of the whole ``param``, however it is sharded."""
        return tuple(param.shape)

    @contextlib.contextmanager
    def writing_local(self, model: nn.Module) -> Iterator[None]:
        """Context for writing into :meth:`local_tensor` pieces outside a step (e.g. swapping in
        the EMA weights): afterwards the model computes with what was written."""
        yield

    def backward(self, loss: torch.Tensor) -> None:
        """Backward of ``loss``: a scalar or the ``[heads]`` losses of a grid (summed; scaled for
        float16, per head with a :class:`~harness.parallel.head_steps.HeadScaler`)."""
        self.precision.scale(loss).backward()

    @contextlib.contextmanager
    def accumulate(self, model: nn.Module, sync: bool) -> Iterator[None]:
        """Context for one micro-batch; ``sync=False`` on all but the last of an accumulation."""
        yield

    #: whether a probe head with a NaN/Inf loss can skip its step alone (:meth:`drop_heads`)
    skips_per_head = True

    def optimizer_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, max_norm: float | None):
        """Unscale, clip to ``max_norm`` (None: no clipping; each probe head on its own norm:
        :func:`~harness.parallel.head_steps.clip_per_head`), step, zero the gradients.

        Returns the gradient norm over all heads before clipping (a tensor) or None without
        clipping.
        """
        scaler = self.precision.scaler
        if scaler is not None:
            scaler.unscale_(optimizer)
        norm = clip_per_head(optimizer, max_norm, self.full_norm)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return norm

    def full_norm(self, norm: torch.Tensor) -> torch.Tensor:
        """A gradient norm as a plain tensor (sharding strategies hold it as a DTensor)."""
        return norm

    def drop_heads(self, optimizer: torch.optim.Optimizer, heads: list[int]) -> None:
        """Probe ``heads`` had a NaN/Inf loss on some rank: their gradients are forgotten before
        the step, so only they skip it (the same ``heads`` on every rank)."""
        drop_head_gradients(optimizer, heads)

    def skip_micro_batch(self, model: nn.Module) -> None:
        """A micro-batch with a non-finite loss: run no backward for it."""

    def discard_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Drop the gradients of a step that had a non-finite loss (no optimizer update)."""
        optimizer.zero_grad(set_to_none=True)

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` in place over all ranks."""
        return tensor

    def all_finite(self, tensor: torch.Tensor) -> bool:
        """Whether ``tensor`` is finite on every rank: the same answer everywhere (one tiny
        all-reduce), so all ranks skip a step together and no rank waits in a collective that
        another one skipped."""
        bad = (~torch.isfinite(tensor.detach())).sum(dtype=torch.float32).reshape(1)
        return not bool(self.all_reduce_sum(bad))

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        return [obj]

    def gather_to_main(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on the main rank only (``[]`` elsewhere): what
        only the main rank writes (prediction rows) costs the other ranks nothing."""
        return [obj]

    def barrier(self) -> None:
        """Wait for every rank."""

    def full_model_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The whole, unsharded model state on every rank (CPU tensors), e.g. to compare ranks."""
        return {k: v.detach().cpu() for k, v in self.unwrap(model).state_dict().items()}

    def save_state(
        self, folder: Path, model: nn.Module, optimizer, extra: dict[str, Any], trainable_only: bool
    ) -> None:
        """Write model, optimizer and ``extra`` into the checkpoint ``folder`` (main rank)."""
        if not self.is_main:
            return
        state = {
            "model": model_state(self.unwrap(model), trainable_only),
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            **extra,
        }
        write_atomic(folder / STATE_FILE, lambda handle: torch.save(state, handle))

    def load_state(self, folder: Path, model: nn.Module, optimizer) -> dict[str, Any]:
        """Restore what :meth:`save_state` wrote; returns its ``extra`` entries."""
        state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
        load_model_state(self.unwrap(model), state.pop("model"))
        optimizer_state = state.pop("optimizer")
        if optimizer is not None and optimizer_state is not None:
            optimizer.load_state_dict(optimizer_state)
        return state

    def close(self) -> None:
        """Release process-group resources."""


def frozen_state_keys(model: nn.Module) -> set[str]:
    """State keys of frozen parameters and of the other tensors of the modules holding them: what
    a trainable-only checkpoint leaves out (and may therefore lack on load)."""
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    prefixes = tuple(name.rsplit(".", 1)[0] + "." for name in frozen)
    return {k for k in model.state_dict() if k in frozen or (prefixes and k.startswith(prefixes))}


def model_state(model: nn.Module, trainable_only: bool) -> dict[str, torch.Tensor]:
    """The model's state dict; with ``trainable_only``, without :func:`frozen_state_keys` (a
    frozen, pretrained encoder is reloaded from its own file)."""
    state = model.state_dict()
    if not trainable_only:
        return state
    left_out = frozen_state_keys(model)
    return {k: v for k, v in state.items() if k not in left_out}


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load our own checkpoint's model state strictly (a trainable-only state may omit
    :func:`frozen_state_keys`, nothing else)."""
    result = model.load_state_dict(state, strict=False)
    may_lack = frozen_state_keys(model)
    missing = [k for k in result.missing_keys if k not in may_lack]
    if missing or result.unexpected_keys:
        raise CheckpointError(
            f"checkpoint does not match the model: missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}"
        )


class DistributedStrategy(Strategy):
    """Collectives over the default process group (which must already be initialised)."""

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def gather_objects(self, obj: Any) -> list[Any]:
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered

    def gather_to_main(self, obj: Any) -> list[Any]:
        gathered: list[Any] | None = [None] * self.world_size if self.is_main else None
        dist.gather_object(obj, gathered, dst=0)
        return gathered or []

    def barrier(self) -> None:
        dist.barrier()

    def close(self) -> None:
        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
