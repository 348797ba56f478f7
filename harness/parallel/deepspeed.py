"""DeepSpeed ZeRO 1/2/3 behind the strategy interface.

The harness owns the optimizer (torch AdamW with its parameter groups, given to DeepSpeed as
the client optimizer) and the schedules; DeepSpeed owns partitioning, offload, precision
(bf16, or fp16 with dynamic loss scaling), gradient accumulation boundaries and clipping. The
fields of the DeepSpeed JSON that must agree with the harness config are filled in from it; a
JSON that contradicts the config is refused with both values named. ZeRO++ (hpZ, qwZ, qgZ) is
checked against the launch in :mod:`harness.parallel.zeropp`.
"""

from __future__ import annotations

import contextlib
import copy
import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.core.errors import UserError
from harness.core.fileio import read_json
from harness.models.family import DeferredBlocks
from harness.parallel.distributed import process_info
from harness.parallel.head_steps import head_parameter_sets
from harness.parallel.meta_init import full_blocks, move_materialised
from harness.parallel.precision import Precision
from harness.parallel.strategy import DistributedStrategy
from harness.parallel.zeropp import HPZ_KEY, fill_zeropp, quantized_options, quantizer_available, secondary_group

TAG = "deepspeed"
DEFAULT_CONFIG: dict[str, Any] = {"zero_optimization": {"stage": 2}}
OWNED_BY_HARNESS = ("optimizer", "scheduler")


class DeepSpeedConfigError(UserError, ValueError):
    """The DeepSpeed JSON contradicts the harness config."""


def resolve_deepspeed_config(
    base: dict[str, Any] | str | Path | None,
    micro_batch: int,
    accumulation: int,
    world_size: int,
    clip_grad: float | None,
    dtype: str,
    local_world_size: int | None = None,
) -> dict[str, Any]:
    """The DeepSpeed config for this run: ``base`` (a dict or JSON path; default ZeRO-2) with the
    fields the harness decides filled in. Values set to ``"auto"`` are filled in silently
    (``zero_hpz_partition_size``: ``local_world_size``, the launcher's processes per node)."""
    source = str(base) if isinstance(base, (str, Path)) else "the DeepSpeed config"
    if isinstance(base, (str, Path)):
        config = read_json(base, DeepSpeedConfigError, "distributed.deepspeed.config")
    else:
        config = copy.deepcopy(base if base is not None else DEFAULT_CONFIG)
    for key in OWNED_BY_HARNESS:
        if key in config:
            raise DeepSpeedConfigError(
                f"{source} has '{key}': the harness builds AdamW (optimization.*) and its schedules itself; "
                f"remove '{key}' from the JSON"
            )
    wanted = {
        "train_micro_batch_size_per_gpu": (micro_batch, "data.batch_size"),
        "gradient_accumulation_steps": (accumulation, "optimization.accumulation_steps"),
        "train_batch_size": (micro_batch * accumulation * world_size, "data.batch_size x accumulation x ranks"),
        "gradient_clipping": (float(clip_grad or 0.0), "optimization.clip_grad"),
    }
    for key, (value, origin) in wanted.items():
        given = config.get(key, "auto")
        if given != "auto" and given != value:
            raise DeepSpeedConfigError(f"{source}: {key}={given!r} contradicts {origin}={value!r}")
        config[key] = value
    for section, enabled in (("bf16", dtype == "bfloat16"), ("fp16", dtype == "float16")):
        given = config.get(section, {}).get("enabled", "auto")
        if given != "auto" and bool(given) != enabled:
            raise DeepSpeedConfigError(f"{source}: {section}.enabled={given!r} contradicts meta.dtype={dtype!r}")
        config.setdefault(section, {})["enabled"] = enabled
    if config["bf16"]["enabled"] and config["bf16"].get("check_grad_overflow") is False:
        raise DeepSpeedConfigError(
            f"{source}: bf16.check_grad_overflow=false would let a NaN/Inf step update the weights; the harness "
            "skips such steps (optimization.max_nonfinite_steps) through it: remove the key"
        )
    if config.get("zero_optimization", {}).get("compute_grad_norm") is False:
        raise DeepSpeedConfigError(
            f"{source}: zero_optimization.compute_grad_norm=false hides NaN/Inf gradients from the step the harness "
            "must skip (and the logged gradient norm): remove the key"
        )
    if config["fp16"]["enabled"]:
        config["fp16"].setdefault("loss_scale", 0)  # 0: dynamic loss scaling
    offload = config.get("zero_optimization", {}).get("offload_optimizer", {}).get("device", "none")
    if offload not in ("none", None):
        config.setdefault("zero_force_ds_cpu_optimizer", False)  # our torch AdamW runs on the host
    fill_zeropp(config, source, world_size, local_world_size, DeepSpeedConfigError)
    config.setdefault("steps_per_print", 1 << 30)  # the harness logs; keep DeepSpeed quiet
    return config


def cast_floating_inputs(module: nn.Module, args: tuple, kwargs: dict, dtype: torch.dtype) -> tuple[tuple, dict]:
    """A forward pre-hook: floating-point tensor inputs in ``dtype``. DeepSpeed's bf16/fp16 modes
    hold the weights in that dtype and switch a CUDA autocast off inside the engine ("torch.autocast
    is enabled outside DeepSpeed but disabled within the DeepSpeed engine"), so fp32 clips met
    bf16 weights at the patch embedding under ZeRO-1/2 on a GPU (found by bench/gpu_check.py on an
    H200; a CPU autocast is left on there, which cast them). The same cast autocast did."""

    def cast(value):
        return value.to(dtype) if torch.is_tensor(value) and value.is_floating_point() else value

    return tuple(cast(value) for value in args), {key: cast(value) for key, value in kwargs.items()}


def cast_parameters(module: nn.Module, dtype: torch.dtype | None) -> None:
    """The floating-point parameters of ``module`` not partitioned yet in ``dtype`` (buffers stay:
    DeepSpeed 0.19.8's own cast, ``_cast_module_mixed_precision``, leaves them too); nothing for None."""
    if dtype is None:
        return
    for parameter in module.parameters():
        if not hasattr(parameter, "ds_id") and parameter.is_floating_point() and parameter.dtype != dtype:
            parameter.data = parameter.data.to(dtype)


def fp16_supported() -> bool:
    """Whether DeepSpeed's accelerator takes fp16 here (its engine raises otherwise; CPUs need
    AVX512-FP16 through oneDNN)."""
    from deepspeed.accelerator import get_accelerator

    return bool(get_accelerator().is_fp16_supported())


class DeepSpeedStrategy(DistributedStrategy):
    """DeepSpeed engine; ``config`` is the JSON path or dict (``distributed.deepspeed.config``).

    ``micro_batch``, ``accumulation`` and ``clip_grad`` come from the harness config and are
    checked against the JSON. ``heads``: probe heads of the run. The engine would clip one norm
    over all of them, which couples them; so when the trainable weights are probe heads only (a
    frozen encoder) or there are several heads, the harness clips each head on its own norm
    (:meth:`_clip_each_head`, through DeepSpeed's ``safe_get_full_grad``/``safe_set_full_grad``) and
    DeepSpeed's own clipping is off. A fine-tuned model with one head keeps DeepSpeed's clipping
    (one norm: the same rule). A non-finite loss in one head still skips the step of every head
    (the engine drops a step whole).
    """

    name = "deepspeed"
    holds_frozen_weights = False
    skips_per_head = False

    def __init__(
        self,
        device: torch.device,
        precision: Precision,
        rank: int,
        world_size: int,
        config: dict | str | None = None,
        micro_batch: int = 1,
        accumulation: int = 1,
        clip_grad: float | None = None,
        heads: int = 1,
        local_world_size: int | None = None,
    ) -> None:
        super().__init__(device, precision, rank, world_size)
        self.clip_grad, self.heads = clip_grad, heads
        self._head_params: list[list[torch.Tensor]] = []  # set by prepare when the harness clips
        self._norm: torch.Tensor | None = None  # the norm before the harness's clipping, last step
        local = local_world_size if local_world_size is not None else process_info().local_world_size
        self.config = resolve_deepspeed_config(
            config, micro_batch, accumulation, world_size, clip_grad, precision.name, local
        )
        if self.config.get("fp16", {}).get("enabled") and not fp16_supported():
            raise DeepSpeedConfigError(
                "meta.dtype=float16 under DeepSpeed: DeepSpeed refuses fp16 on this device (a CPU without "
                "AVX512-FP16); use meta.dtype=bfloat16 or float32 here"
            )
        if (quantized := quantized_options(self.config)) and not quantizer_available():
            raise DeepSpeedConfigError(
                f"distributed.deepspeed.config: zero_optimization.{', '.join(quantized)} (ZeRO++ qwZ/qgZ) need "
                f"DeepSpeed's quantizer kernels, which are CUDA only, and this run is on {device.type}: remove them "
                "(hpZ alone runs here: ds_configs/zero3_hpz.json)"
            )
        precision.scaler = None  # DeepSpeed scales fp16 losses itself

    @property
    def zero_stage(self) -> int:
        """The ZeRO stage in use."""
        return int(self.config.get("zero_optimization", {}).get("stage", 0))

    @property
    def hpz_partition_size(self) -> int:
        """ZeRO++ hpZ's group size (1: off)."""
        return int(self.config.get("zero_optimization", {}).get(HPZ_KEY, 1) or 1)

    @property
    def description(self) -> str:
        size = self._built_hpz_size()
        if size <= 1:
            return self.name
        return f"{self.name} ZeRO-3 + hpZ (the weights partitioned again in groups of {size} ranks for the backward)"

    def _built_hpz_size(self) -> int:
        """hpZ's group size as DeepSpeed partitioned the parameters (each carries its group), so the
        summary says what was built; before :meth:`prepare`, as configured."""
        engine = getattr(self, "_engine", None)
        if engine is None:
            return self.hpz_partition_size
        groups = [getattr(p, "ds_zero_param_process_group", None) for p in engine.module.parameters()]
        return max((torch.distributed.get_world_size(group) for group in groups if group is not None), default=1)

    @property
    def shards_parameters(self) -> bool:
        return self.zero_stage == 3

    @property
    def builds_sharded(self) -> bool:
        return self.zero_stage == 3

    def local_tensor(self, param: torch.Tensor) -> torch.Tensor:
        # ZeRO-3 keeps this rank's slice of the flattened parameter in ``ds_tensor``; the module's
        # own ``param`` is an empty placeholder outside a forward.
        return param.ds_tensor if hasattr(param, "ds_tensor") else param

    def layout(self, param: torch.Tensor) -> dict:
        if hasattr(param, "ds_tensor"):
            return {"shard": "flat", "shape": list(param.ds_shape)}
        return {"shard": "none"}

    def parameter_numel(self, param: torch.Tensor) -> int:
        return int(param.ds_numel) if hasattr(param, "ds_numel") else param.numel()

    def parameter_shape(self, param: torch.Tensor) -> tuple[int, ...]:
        return tuple(param.ds_shape) if hasattr(param, "ds_shape") else tuple(param.shape)

    @contextlib.contextmanager
    def writing_local(self, model: nn.Module) -> Iterator[None]:
        if self.zero_stage != 3:
            yield
            return
        # ZeRO-3 keeps small ("persistent") parameters gathered between steps: release them first
        # (their partitions are current), and gather them again from the written partitions after,
        # as DeepSpeed's own step does around its update.
        optimizer = self._engine.optimizer
        optimizer._partition_all_parameters()
        try:
            yield
        finally:
            # hpZ: the second partitions hold the weights as they were (DeepSpeed drops them after
            # its step and around checkpoints, and so here), else the next gather reads them
            optimizer.invalidate_secondary_tensor()
            persistent = optimizer.persistent_parameters
            if persistent:
                persistent[0].all_gather(persistent)

    def prepare(
        self,
        model: nn.Module,
        build_optimizer: Callable[[nn.Module], torch.optim.Optimizer | None],
        deferred: DeferredBlocks | None = None,
    ) -> tuple[nn.Module, torch.optim.Optimizer | None]:
        import deepspeed

        move_materialised(model, self.device)
        hpz_group = None
        if self.zero_stage == 3:
            deepspeed.init_distributed(dist_backend=torch.distributed.get_backend())  # joins our group
            hpz_group = secondary_group(self.hpz_partition_size)
        dtype = self.compute_dtype
        if deferred:  # ZeRO-3: each block made in full, then partitioned at once
            for _, block in full_blocks(model, deferred, device=self.device, fill=self.rank == 0):
                # DeepSpeed takes a model with partitioned parameters to hold them in its dtype
                # already (it casts only a model it partitions itself), as its zero.Init would
                # have made them: left in fp32 they computed in fp32 on a GPU (3.3% MFU)
                cast_parameters(block, dtype)
                # the other ranks receive rank 0's values as the block is partitioned
                deepspeed.zero.Init(module=block, config_dict_or_path=self.config, zero_param_parallel_group=hpz_group)
            cast_parameters(model, dtype)  # the stem and the head, which the engine partitions as they are
        optimizer = build_optimizer(model)
        encoder = getattr(model, "encoder", None)
        probe_only = encoder is not None and not any(p.requires_grad for p in encoder.parameters())
        if optimizer is not None and self.clip_grad and (self.heads > 1 or probe_only):
            self._head_params = head_parameter_sets(optimizer)
            self.config["gradient_clipping"] = 0.0  # the harness clips each head (see the class)
        engine, ds_optimizer, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=self.config)
        self._engine = engine
        if dtype is not None:
            engine.module.register_forward_pre_hook(
                functools.partial(cast_floating_inputs, dtype=dtype), with_kwargs=True
            )
        return engine, ds_optimizer

    @property
    def compute_dtype(self) -> torch.dtype | None:
        """The dtype DeepSpeed holds the weights in (its ``bf16``/``fp16`` sections), or None (fp32)."""
        if self.config["bf16"]["enabled"]:
            return torch.bfloat16
        return torch.float16 if self.config["fp16"]["enabled"] else None

    def _clip_each_head(self) -> None:
        """At the accumulation boundary, before the engine steps: clip each head's gradient on its
        own norm, as :func:`~harness.parallel.head_steps.clip_per_head` does for the other
        strategies (same arithmetic, on the full gradient DeepSpeed assembles from its
        partitions). A non-finite norm is left to the engine, which skips the step."""
        from deepspeed.utils import safe_get_full_grad, safe_set_full_grad

        scale = float(getattr(self._engine.optimizer, "loss_scale", 1.0) or 1.0)  # fp16: gradients are scaled
        norms = []
        for params in self._head_params:
            pairs = [(p, g) for p in params if (g := safe_get_full_grad(p)) is not None]
            if not pairs:
                continue
            norm = torch.nn.utils.get_total_norm([g.float() for _, g in pairs]) / scale
            norms.append(norm)
            if not torch.isfinite(norm):
                continue
            coefficient = torch.clamp(self.clip_grad / (norm + 1e-6), max=1.0)
            if coefficient < 1.0:
                for param, grad in pairs:
                    safe_set_full_grad(param, grad * coefficient.to(grad.dtype))
        self._norm = torch.linalg.vector_norm(torch.stack(norms)) if norms else None

    def unwrap(self, model: nn.Module) -> nn.Module:
        return getattr(model, "module", model)

    def backward(self, loss: torch.Tensor) -> None:
        # The loop already divides by the number of micro-batches; DeepSpeed must not again.
        self._engine.backward(loss.sum(), scale_wrt_gas=False)
        if self._head_params and self._engine.is_gradient_accumulation_boundary():
            self._clip_each_head()
        self._engine.step()  # a no-op except at the accumulation boundary, where it steps

    def skip_micro_batch(self, model: nn.Module) -> None:
        # The engine counts micro-batches and owns the step: feed it a loss whose gradient is NaN in
        # every trainable weight (not through the bad activations). At the boundary its ZeRO
        # optimizer sees a non-finite gradient norm and drops the whole step (no update, moments
        # untouched, gradients cleared), as it does for an fp16 overflow.
        nan = torch.full((), float("nan"), device=self.device)
        poisoned = sum((p.sum() * nan for p in model.parameters() if p.requires_grad), torch.zeros_like(nan))
        self.backward(poisoned)

    def discard_step(self, optimizer) -> None:
        """Done by the engine at the boundary (see :meth:`skip_micro_batch`)."""

    def optimizer_step(self, model: nn.Module, optimizer, max_norm: float | None):
        """Already done by the engine at the boundary (clipping included); returns the norm
        (before clipping)."""
        if self._head_params:
            return self._norm
        norm = model.get_global_grad_norm()
        return torch.tensor(float(norm)) if norm is not None else None

    def full_model_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        import deepspeed

        module = self.unwrap(model)
        # ZeRO-3 partitions the module's parameters: gather them for the copy (no-op for 1 and 2).
        with deepspeed.zero.GatheredParameters(list(module.parameters()), enabled=self.zero_stage == 3):
            return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}

    def save_state(
        self, folder: Path, model: nn.Module, optimizer, extra: dict[str, Any], trainable_only: bool
    ) -> None:
        """DeepSpeed's own (ZeRO-partitioned) checkpoint, every rank; harness state as client state."""
        model.save_checkpoint(str(folder), tag=TAG, client_state={"harness": extra}, save_latest=True)

    def load_state(self, folder: Path, model: nn.Module, optimizer) -> dict[str, Any]:
        path, client_state = model.load_checkpoint(
            str(folder), tag=TAG, load_optimizer_states=optimizer is not None, load_lr_scheduler_states=False
        )
        if path is None:
            raise FileNotFoundError(f"no DeepSpeed checkpoint under {folder}/{TAG}")
        return client_state["harness"]
