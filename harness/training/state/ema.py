"""Exponential moving average of the trained weights, swapped in for evaluation and export."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

from harness.parallel.sharding import assemble, split
from harness.training.optim import clean_name

EMA_KEY, LAYOUT_KEY = "ema", "ema_layout"  # in the rank files of a checkpoint (see ``rank_state``)


def _whole(param: torch.Tensor) -> torch.Tensor:
    return param


class ModelEMA:
    """``ema = decay * ema + (1 - decay) * weight`` after every optimizer step, in fp32.

    Only parameters that train are tracked (a frozen encoder costs no extra memory), and only the
    part of each that this rank holds: ``local`` maps a parameter to that part (the whole tensor
    by default; FSDP2's local shard; ZeRO-3's ``ds_tensor`` slice, see
    ``Strategy.local_tensor``), so the average is sharded exactly as the weights are and costs
    ``4 bytes x local parameters`` per rank. Under DeepSpeed bf16 (ZeRO 1/2/3) the module holds bf16
    copies of the fp32 master weights: the average follows those.
    """

    def __init__(self, model: nn.Module, decay: float, local: Callable[[torch.Tensor], torch.Tensor] = _whole) -> None:
        self.decay = decay
        self.local = local
        self.names = [name for name, p in model.named_parameters() if p.requires_grad]
        # Saved under the plain model's names (without activation-checkpointing/compile wrappers),
        # so a checkpoint's average lines up with the consolidated model's parameters.
        self.keys = [clean_name(name) for name in self.names]
        self.shadow = [local(p).detach().float().clone() for _, p in self._tracked(model)]

    def _tracked(self, model: nn.Module) -> list[tuple[str, torch.Tensor]]:
        params = dict(model.named_parameters())
        return [(name, params[name]) for name in self.names]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards the current weights."""
        current = [self.local(p).detach().float() for _, p in self._tracked(model)]
        torch._foreach_lerp_(self.shadow, current, 1.0 - self.decay)

    @contextlib.contextmanager
    def applied(self, model: nn.Module, writing=contextlib.nullcontext) -> Iterator[None]:
        """Run the block with the averaged weights in ``model``; the trained ones come back after.
        ``writing(model)`` wraps each write (``Strategy.writing_local``: what a sharding strategy
        needs so that its forward sees written shards)."""
        parts = [self.local(p) for _, p in self._tracked(model)]
        with torch.no_grad(), writing(model):
            backup = [part.detach().clone() for part in parts]
            for part, average in zip(parts, self.shadow):
                part.copy_(average)
        try:
            yield
        finally:
            with torch.no_grad(), writing(model):
                for part, saved in zip(parts, backup):
                    part.copy_(saved)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """This rank's averaged weights by parameter name (its shard when sharded)."""
        return dict(zip(self.keys, self.shadow))

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore :meth:`state_dict` (names and shard shapes must match)."""
        missing = [name for name in self.keys if name not in state]
        if missing:
            raise KeyError(f"EMA state lacks {missing[:3]}")
        for average, name in zip(self.shadow, self.keys):
            if average.shape != state[name].shape:
                raise ValueError(f"EMA state of {name} has shape {tuple(state[name].shape)}, expected "
                                 f"{tuple(average.shape)} (saved with another sharding?)")  # fmt: skip
            average.copy_(state[name])

    def layouts(self, model: nn.Module, layout: Callable[[torch.Tensor], dict]) -> dict[str, dict]:
        """Parameter name -> how its average is split over ranks (saved for consolidation)."""
        return {clean_name(name): layout(param) for name, param in self._tracked(model)}

    def full_state(self, strategy, model: nn.Module) -> dict[str, torch.Tensor]:
        """The whole averaged weights on every rank (CPU fp32), gathered from all ranks' shards."""
        pieces = strategy.gather_objects({name: tensor.cpu() for name, tensor in self.state_dict().items()})
        layouts = self.layouts(strategy.unwrap(model), strategy.layout)
        return {name: assemble([piece[name] for piece in pieces], layouts[name]) for name in self.keys}

    def rank_state(self, strategy, model: nn.Module) -> dict:
        """What this rank saves with its own checkpoint file: its shard of the average and the
        layout of each parameter (every rank when sharded; only rank 0 otherwise)."""
        if not strategy.shards_parameters and not strategy.is_main:
            return {}
        return {EMA_KEY: self.state_dict(), LAYOUT_KEY: self.layouts(strategy.unwrap(model), strategy.layout)}

    def restore(self, checkpoint, strategy, model: nn.Module, own: dict | None) -> bool:
        """Load this rank's average from ``checkpoint``: from ``own`` (this rank's file, already
        read by the caller) when it holds this rank's piece under the same layout; otherwise
        (another number of ranks, hybrid or plain sharding) from every rank's file, reassembled and
        split again. False when the checkpoint has no average (it was written without EMA)."""
        if not strategy.shards_parameters:  # only rank 0 wrote the whole average
            own = own if strategy.is_main else _read_rank_file(Path(checkpoint) / "rank_r0.pt")
        layouts = self.layouts(strategy.unwrap(model), strategy.layout)
        # A piece of the same shape may still be other rows (3 rows over 4 ranks or 2 groups of 2:
        # rank 1 holds row 1 or row 2): the saved layout must be this one.
        if (own or {}).get(LAYOUT_KEY) == layouts:
            try:
                self.load_state_dict(own[EMA_KEY])
                return True
            except (KeyError, ValueError):
                pass
        whole = whole_average(read_rank_files(checkpoint))
        if whole is None:
            return False
        self.load_state_dict(
            {name: split(whole[name], layouts[name], strategy.rank, strategy.world_size) for name in self.keys}
        )
        return True


def _read_rank_file(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else {}


def read_rank_files(checkpoint) -> dict[int, dict]:
    """Rank -> the EMA part of that rank's file in a checkpoint folder (ranks without one left out)."""
    out = {}
    for path in sorted(Path(checkpoint).glob("rank_r*.pt")):
        state = _read_rank_file(path)
        if EMA_KEY in state:
            out[int(path.stem.removeprefix("rank_r"))] = {EMA_KEY: state[EMA_KEY], LAYOUT_KEY: state[LAYOUT_KEY]}
    return out


def whole_average(files: dict[int, dict]) -> dict[str, torch.Tensor] | None:
    """The whole averaged weights (fp32) from the rank files of a checkpoint, or None without any."""
    if not files:
        return None
    ranks = sorted(files)
    layouts = files[ranks[0]][LAYOUT_KEY]
    return {name: assemble([files[r][EMA_KEY][name] for r in ranks], layout) for name, layout in layouts.items()}
