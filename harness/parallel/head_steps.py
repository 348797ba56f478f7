"""Per-head gradient statistics: the probe heads of a grid never share one.

A grid of probe heads (``optimization.heads``) trains in one pass, but each head must train
exactly as it would alone: its gradient norm is clipped on its own norm, and a head whose loss
is NaN/Inf skips its step without stopping the others. Optimizer groups of head ``i`` carry
``head: i`` (:func:`harness.training.optim.param_groups`); groups without it (a single head, or
a fine-tuned model) form one set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch


def head_parameter_sets(optimizer: torch.optim.Optimizer) -> list[list[torch.Tensor]]:
    """The optimizer's parameters, one list per probe head (in head order), then one list of
    the parameters of groups that belong to no head (when there are any)."""
    heads: dict[int, list[torch.Tensor]] = {}
    rest: list[torch.Tensor] = []
    for group in optimizer.param_groups:
        target = heads.setdefault(group["head"], []) if "head" in group else rest
        target.extend(group["params"])
    return [heads[index] for index in sorted(heads)] + ([rest] if rest else [])


def clip_per_head(
    optimizer: torch.optim.Optimizer,
    max_norm: float | None,
    full: Callable[[torch.Tensor], torch.Tensor] = lambda norm: norm,
) -> torch.Tensor | None:
    """Clip each head's gradients to ``max_norm`` on that head's own norm (None or 0: no
    clipping); returns the norm over all heads' gradients before clipping (``full`` turns a
    sharded norm into a plain tensor), or None without clipping.

    Each head's norm is computed as :func:`torch.nn.utils.clip_grad_norm_` would over that head
    alone (for sharded gradients, over every rank's pieces), so a head of a grid is clipped
    bit-identically to a run that trains it alone."""
    if not max_norm:
        return None
    norms = []
    for params in head_parameter_sets(optimizer):
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            continue
        norm = torch.nn.utils.get_total_norm(grads)
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
        norms.append(full(norm).float())
    return torch.linalg.vector_norm(torch.stack(norms)) if norms else None


def drop_head_gradients(optimizer: torch.optim.Optimizer, heads: Iterable[int]) -> None:
    """Forget the gradients of probe ``heads``: AdamW then leaves their weights, moments and
    step counts untouched (a skipped step for those heads only)."""
    dropped = set(heads)
    for group in optimizer.param_groups:
        if group.get("head") in dropped:
            for param in group["params"]:
                param.grad = None


def nonfinite_heads(losses: torch.Tensor, all_reduce_sum: Callable[[torch.Tensor], torch.Tensor]) -> list[int]:
    """Indices of the heads whose loss (``[heads]``) is NaN/Inf on any rank: the same list on
    every rank (one small all-reduce, one host sync)."""
    bad = (~torch.isfinite(losses.detach())).float()
    return [index for index, count in enumerate(all_reduce_sum(bad).tolist()) if count]


class HeadScaler:
    """float16 loss scaling kept for each probe head on its own, as V-JEPA 2 keeps one
    ``GradScaler`` per head: :class:`torch.amp.GradScaler`'s arithmetic (scale ``2**16``, doubled
    after ``growth_interval`` clean steps, halved on an inf/NaN gradient, when that head's step is
    skipped) per head, so an overflow in one head neither skips nor rescales the others.

    Used in place of the run's ``GradScaler`` (same methods) when a float16 run has several
    heads; ``all_reduce_sum`` makes an inf found in any rank's gradient piece count everywhere.
    """

    per_head = True

    def __init__(
        self,
        heads: int,
        device: torch.device,
        all_reduce_sum: Callable[[torch.Tensor], torch.Tensor],
        init_scale: float = 2.0**16,
        growth_interval: int = 2000,
    ) -> None:
        self.scales = torch.full((heads,), init_scale, dtype=torch.float32, device=device)
        self.growth = torch.zeros(heads, dtype=torch.int32, device=device)
        self.found_inf = torch.zeros(heads, dtype=torch.float32, device=device)
        self.all_reduce_sum, self.growth_interval = all_reduce_sum, growth_interval

    def scale(self, losses: torch.Tensor) -> torch.Tensor:
        """The sum of the ``[heads]`` losses, each times its head's scale (what backward runs on)."""
        return (losses * self.scales).sum()

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        """Divide each head's gradients by its scale and note the heads with an inf/NaN one."""
        self.found_inf.zero_()
        for index, params in enumerate(head_parameter_sets(optimizer)[: len(self.scales)]):
            grads = [getattr(p.grad, "_local_tensor", p.grad) for p in params if p.grad is not None]
            if grads:
                inverse = self.scales[index : index + 1].double().reciprocal().float()
                torch._amp_foreach_non_finite_check_and_unscale_(grads, self.found_inf[index : index + 1], inverse)
        self.all_reduce_sum(self.found_inf)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """The optimizer step of the heads whose gradients are finite."""
        drop_head_gradients(optimizer, [i for i, found in enumerate(self.found_inf.tolist()) if found])
        optimizer.step()

    def update(self) -> None:
        """Grow or back off each head's scale (``torch._amp_update_scale_``, per head)."""
        for index in range(len(self.scales)):
            piece = slice(index, index + 1)
            torch._amp_update_scale_(self.scales[piece], self.growth[piece], self.found_inf[piece], 2.0, 0.5,
                                     self.growth_interval)  # fmt: skip

    def state_dict(self) -> dict:
        """Scales and growth trackers of every head."""
        return {"scales": self.scales.tolist(), "growth": self.growth.tolist()}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s values; a :class:`torch.amp.GradScaler`'s state (a run
        saved with one loss scale for all heads) gives every head that scale and growth tracker."""
        if "scales" not in state:
            heads = len(self.scales)
            state = {"scales": [state["scale"]] * heads, "growth": [state["_growth_tracker"]] * heads}
        self.scales.copy_(torch.tensor(state["scales"]))
        self.growth.copy_(torch.tensor(state["growth"], dtype=torch.int32))


def one_scale_state(scaler: torch.amp.GradScaler, state: dict) -> dict:
    """``state`` for :meth:`torch.amp.GradScaler.load_state_dict`: as it is, or, from a
    :class:`HeadScaler`'s state, the smallest head scale (the one no head has overflowed at)."""
    if "scales" not in state:
        return state
    return scaler.state_dict() | {"scale": min(state["scales"]), "_growth_tracker": 0}
