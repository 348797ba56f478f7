"""Every strategy in one table: what the rest of the harness may know about it.

A :class:`StrategySpec` declares a strategy's name, how it is built (imported only when used, so
this module stays light enough for config parsing), its options from the run settings, its
offline checkpoint reader (consolidation and export read any checkpoint through it), its memory
formula for the planner, and which checkpoints it resumes. Config choices, resume checks, export
and the planner all go through :data:`STRATEGY_SPECS`; no module outside ``parallel/`` compares
strategy names. A strategy's own settings are a dataclass here (its ``options_section``), which the
config schema places at ``distributed.<name>``. A new strategy is one entry here plus its module.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.core.errors import UserError


@dataclass(frozen=True)
class Sizes:
    """What a memory formula reads (see harness.plan.memory's module docs for the formulas)."""

    p: float  #: all parameters
    q: float  #: trainable parameters
    n: int  #: ranks in all
    group: int  #: ranks the states are sharded over: ``n``, or a group's under hybrid sharding / hpZ
    unit: float  #: parameters of the largest sharding unit (a block)
    low: int  #: bytes per value in the run's low precision (2 for bf16/fp16, else 4)
    #: this rank's share of ``p`` / ``q`` as FSDP2 holds it over ``group`` ranks: every parameter's
    #: first dimension padded up to a multiple of ``group`` (``p / group`` when the shapes are unknown)
    p_shard: float
    q_shard: float
    #: the largest unit's parameters as FSDP2 gathers them over ``group`` ranks (padded rows included)
    unit_padded: float = 0.0
    reduce: int = 4  #: bytes per gradient value in FSDP2's reduce-scatter (``distributed.fsdp.reduce_dtype``)


# (weights, gradients, optimizer, gathered) bytes per rank, from the sizes and whether the states
# are offloaded to host memory
MemoryFormula = Callable[[Sizes, bool], tuple[float, float, float, float]]


@dataclass(frozen=True)
class PlanRow:
    """One row of the memory plan: a named variant of a strategy."""

    name: str
    formula: MemoryFormula
    offload: bool = False
    listed: bool = True  #: printed by the planner (one process is not a distributed plan)
    grouped: bool = False  #: shards over a group of ranks (a node by default), replicated across groups
    #: gradients are made in backward as the activations are let go, and set to None after the
    #: step (FSDP2's sharded gradients): with one micro-batch per step the peak holds one or the other
    grads_freed: bool = False


@dataclass(frozen=True)
class StrategySpec:
    """What a strategy declares (see the module docs).

    Attributes:
        name: the ``distributed.strategy`` value.
        module: ``module:Class`` of the implementation, imported when built.
        options: run settings (``distributed``, ``data``, ``optimization`` sections, read by
            attribute; its own settings are ``distributed.<name>``) -> the implementation's
            keyword options.
        read_model_state: reads a checkpoint folder's model state offline (no process group).
        resumes: strategy names whose checkpoints this one loads.
        same_world_size: its checkpoints only load on as many ranks as wrote them.
        plan_rows: its rows in the memory planner.
        plain_optimizer_state: the optimizer's state dict is torch's, keyed by parameter order (a
            foreign optimizer state can be poured into it).
    """

    name: str
    module: str
    options: Callable[[Any, Any, Any], dict[str, Any]] = lambda distributed, data, optimization: {}
    read_model_state: Callable[[Path], dict] | None = None
    resumes: frozenset[str] = frozenset()
    same_world_size: bool = False
    plan_rows: tuple[PlanRow, ...] = field(default_factory=tuple)
    plain_optimizer_state: bool = False
    convert_hint: str = ""  #: how to load its checkpoints on another number of ranks, if at all
    #: its settings: a dataclass whose fields (with ``range`` / ``choices`` metadata, as
    #: harness.config.fields reads them) become the config section ``distributed.<name>``
    options_section: type | None = None

    def implementation(self) -> type:
        """The strategy class (imported now)."""
        import importlib

        module, name = self.module.split(":")
        return getattr(importlib.import_module(module), name)

    def resume_problem(self, saved: str, saved_world_size: int, world_size: int) -> str | None:
        """Why a checkpoint written by ``saved`` on ``saved_world_size`` ranks cannot be resumed by
        this strategy on ``world_size`` ranks (None: it can)."""
        if saved != self.name and saved not in self.resumes:
            return f"it was written by distributed.strategy={saved}, this run uses {self.name}: the formats differ"
        if self.same_world_size and saved_world_size != world_size:
            return (
                f"it is a {self.name} checkpoint of {saved_world_size} ranks and this run has {world_size}: its "
                f"partitions do not reshard on load{self.convert_hint}"
            )
        return None


def _torch_state(folder: Path) -> dict:
    import torch

    from harness.parallel.strategy import STATE_FILE

    return torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)["model"]


def _dcp_state(folder: Path) -> dict:
    import tempfile

    import torch
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    with tempfile.TemporaryDirectory() as tmp:
        dcp_to_torch_save(folder / "dcp", Path(tmp) / "state.pt")
        return torch.load(Path(tmp) / "state.pt", map_location="cpu", weights_only=True)["model"]


def _zero_state(folder: Path) -> dict:
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    from harness.parallel.deepspeed import TAG
    from harness.parallel.strategy import clean_name

    state = get_fp32_state_dict_from_zero_checkpoint(str(folder), tag=TAG)
    # DeepSpeed records parameter names as named_parameters() gives them, wrappers included
    # (activation checkpointing, compile); state dicts use the plain names.
    return {clean_name(key): value for key, value in state.items()}


def _replicated(s: Sizes, offload: bool) -> tuple[float, ...]:
    return 4 * s.p, 4 * s.q, 0.0 if offload else 8.0 * s.q, 0.0


def _fsdp(s: Sizes, offload: bool) -> tuple[float, ...]:
    # gathered: the unit computing and the one prefetched, plus the all-gather's and the
    # reduce-scatter's flat buffers of one unit, all at their padded size
    unit = s.unit_padded or s.unit
    gathered = unit * (3 * s.low + s.reduce)
    if offload:  # weights, gradients and optimizer state live in host memory
        return 0.0, 0.0, 0.0, gathered
    return 4 * s.p_shard, 4 * s.q_shard, 8.0 * s.q_shard, gathered


def _zero(stage: int) -> MemoryFormula:
    def formula(s: Sizes, offload: bool) -> tuple[float, ...]:
        states = 0.0 if offload else 12.0 * s.q  # AdamW moments + fp32 master, partitioned
        if stage < 3:
            return s.low * s.p, s.low * s.q / s.n, states / s.n, 0.0
        return (0.0 if offload else s.low * s.p / s.n), s.low * s.q / s.n, states / s.n, 2 * s.unit * s.low

    return formula


def _zero_hpz(s: Sizes, offload: bool) -> tuple[float, ...]:
    """ZeRO-3 plus hpZ's secondary partition: each rank also keeps a ``1/group`` slice of the
    low-precision weights, so backward gathers them inside the node."""
    weights, grads, optimizer, gathered = _zero(3)(s, offload)
    return weights + s.low * s.p / s.group, grads, optimizer, gathered


@dataclass
class FSDPOptions:
    """FSDP2's settings: the config section ``distributed.fsdp``."""

    reshard_after_forward: bool = True  #: FSDP2: free gathered weights after forward (less memory)
    cpu_offload: bool = False  #: FSDP2: keep sharded weights, grads and optimizer state in host memory
    #: FSDP2: gradient reduction dtype (float32 or bfloat16)
    reduce_dtype: str = field(default="float32", metadata={"choices": ("float32", "bfloat16")})
    #: FSDP2 hybrid sharding (HSDP): shard in groups of N ranks, replicate across; auto/0: GPUs per node; null: off
    shard_group_size: int | str | None = None

    def problem(self) -> str | None:
        """What is wrong with these settings, as ``key: why`` (None: nothing); the world size is
        checked when the strategy is built (:func:`harness.parallel.fsdp.hybrid_mesh_shape`)."""
        size = self.shard_group_size
        if size is None or size == "auto" or (isinstance(size, int) and not isinstance(size, bool) and size >= 0):
            return None
        return f"shard_group_size: {size!r} is neither auto, 0 (the GPUs of a node), a number of ranks nor null"


@dataclass
class DeepSpeedOptions:
    """DeepSpeed's settings: the config section ``distributed.deepspeed``."""

    config: str | None = None  #: DeepSpeed JSON (e.g. ds_configs/zero3.json); null: ZeRO-2 defaults


def _fsdp_options(distributed: Any, data: Any, optimization: Any) -> dict[str, Any]:
    return dataclasses.asdict(distributed.fsdp)


def _deepspeed_options(distributed: Any, data: Any, optimization: Any) -> dict[str, Any]:
    return {"config": distributed.deepspeed.config, "micro_batch": data.batch_size,
            "accumulation": optimization.accumulation_steps, "clip_grad": optimization.clip_grad,
            "heads": max(1, len(optimization.heads))}  # fmt: skip


STRATEGY_SPECS: dict[str, StrategySpec] = {
    spec.name: spec
    for spec in (
        StrategySpec("single", "harness.parallel.strategy:Strategy", read_model_state=_torch_state,
                     resumes=frozenset({"ddp"}), plain_optimizer_state=True,
                     plan_rows=(PlanRow("single", _replicated, listed=False),)),
        StrategySpec("ddp", "harness.parallel.ddp:DDPStrategy", read_model_state=_torch_state,
                     resumes=frozenset({"single"}), plain_optimizer_state=True,
                     plan_rows=(PlanRow("ddp", _replicated),)),
        StrategySpec("fsdp", "harness.parallel.fsdp:FSDPStrategy", _fsdp_options, _dcp_state,
                     options_section=FSDPOptions,
                     plan_rows=(PlanRow("fsdp", _fsdp, grads_freed=True),
                                PlanRow("fsdp+offload", _fsdp, True, grads_freed=True),
                                PlanRow("hsdp", _fsdp, grouped=True, grads_freed=True))),
        StrategySpec("deepspeed", "harness.parallel.deepspeed:DeepSpeedStrategy", _deepspeed_options, _zero_state,
                     options_section=DeepSpeedOptions,
                     same_world_size=True, convert_hint=" (DeepSpeed's ds_to_universal.py converts it to a universal "
                                                        "checkpoint, which does)",
                     plan_rows=(PlanRow("zero1", _zero(1)), PlanRow("zero2", _zero(2)), PlanRow("zero3", _zero(3)),
                                PlanRow("zero3+offload", _zero(3), True),
                                PlanRow("zero3+hpz", _zero_hpz, grouped=True))),
    )
}  # fmt: skip
STRATEGY_CHOICES = ("auto", *STRATEGY_SPECS)  # auto: ddp when launched as several processes, else single
PLAN_ROWS = {row.name: row for spec in STRATEGY_SPECS.values() for row in spec.plan_rows}
#: ``distributed.<name>`` -> the options section of each strategy that has settings
OPTIONS_SECTIONS = {spec.name: spec.options_section for spec in STRATEGY_SPECS.values() if spec.options_section}
#: the flat ``distributed`` keys from before each strategy had its section -> their key in it;
#: harness.config still reads them, with one deprecation warning per key
RENAMED_KEYS = {
    "fsdp_reshard_after_forward": "fsdp.reshard_after_forward",
    "fsdp_cpu_offload": "fsdp.cpu_offload",
    "fsdp_reduce_dtype": "fsdp.reduce_dtype",
    "deepspeed_config": "deepspeed.config",
}


def resolve_strategy_name(name: str, world_size: int) -> str:
    """``auto`` is ``ddp`` when the launcher started several processes, else ``single``."""
    if name != "auto":
        return name
    return "ddp" if world_size > 1 else "single"


class UnknownStrategy(UserError, KeyError):
    """A name no strategy is registered under (e.g. in a foreign or damaged ``meta.json``)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def strategy_spec(name: str) -> StrategySpec:
    """The spec of a registered strategy (a checkpoint's ``meta.json`` names one)."""
    if name not in STRATEGY_SPECS:
        raise UnknownStrategy(f"unknown strategy {name!r}; registered: {', '.join(STRATEGY_SPECS)}")
    return STRATEGY_SPECS[name]


#: the strategy ``harness.plan --simulate`` runs under a fake process group on fake tensors (FSDP2's
#: set-up moves no real data; DDP's and DeepSpeed's do)
SIMULATED_STRATEGY = "fsdp"
