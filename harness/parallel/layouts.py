"""The ways a model can be spread over a cluster, and the collectives each issues per step: what
``harness.plan --suggest`` (:mod:`harness.plan.suggest`) searches and times. Written down here,
beside the strategies, because only ``parallel/`` names them.

Collectives per micro-step and rank (``P``/``Q`` all/trained parameters, padded for FSDP2; ``w``
the low-precision bytes; a unit is a block or the root; ``G`` a node's GPUs):

=============  ===================================================  ==============================
layout         weights gathered                                     gradients reduced
=============  ===================================================  ==============================
ddp            -                                                    Q x 4 all-reduce, all ranks,
                                                                    once a step (``no_sync``)
fsdp           2 x P x w over all ranks (forward, backward)         Q x 4 reduce-scatter, all ranks
hsdp S         2 x P x w over the group of S                        Q x 4 reduce-scatter over S,
                                                                    then Q/S x 4 all-reduce across
                                                                    (once a step)
zero3          2 x P x w over all ranks                             Q x w reduce-scatter, all ranks
zero3+hpz      P x w over all ranks (forward), P x w over the node  Q x w reduce-scatter, all ranks
zero++         P x 1 over all ranks, P x 1 over the node (int8)     Q x 0.5 inside the node, then
                                                                    Q/G x 0.5 across (int4)
=============  ===================================================  ==============================

DeepSpeed's accounting, as its source has it (0.19.8): the communication dtype is the run's
(``communication_data_type`` defaults to bf16/fp16); hpZ's backward gathers read the node's
secondary partition (``partition_parameters.py``); qwZ sends int8 with an fp32 scale per ~8k
values in the forward and the backward gathers (``partitioned_param_coordinator.py``; the paper
quantizes only the forward's); qgZ's int4 all-to-all runs inside the node, then 1/G of the
reduced values between nodes (``coalesced_collectives.py``; only with more than one node).
The FSDP/HSDP rows are exactly what the simulator records from the real FSDP2 code
(tests/parallel/test_simulate.py compares them); the DeepSpeed rows follow DeepSpeed's and the
ZeRO++ paper's accounting and are not simulated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: the layouts the simulator runs (FSDP2 under a fake process group); DeepSpeed's set-up moves real data
SIMULATED_ROWS = ("fsdp", "hsdp")
DDP_BUCKET = 25 * 1024**2  #: DDP's default gradient bucket (bytes)


@dataclass(frozen=True)
class Traffic:
    """One kind of collective a rank issues per step, over one group of ranks."""

    name: str  #: all_gather, reduce_scatter, all_reduce
    ranks: int  #: ranks in the group
    nodes: int  #: nodes the group spans (1: it stays on the links inside a node)
    count: int  #: calls per step
    bytes: int  #: per step, the full-size side (a gather's output, a reduce-scatter's input, an all-reduce's tensor)

    @property
    def sent(self) -> float:
        """Bytes each rank sends (a ring): ``(g - 1) / g`` of the full size; twice that for an all-reduce."""
        fraction = (self.ranks - 1) / self.ranks
        return self.bytes * fraction * (2 if self.name == "all_reduce" else 1)


@dataclass(frozen=True)
class Layout:
    """How the model is spread over the ranks."""

    name: str  #: as printed: ``fsdp``, ``hsdp 128 x 8``, ``zero3``, ``zero3+hpz 8``, ``zero++ 8``
    row: str  #: the planner's row for its memory
    group: int  #: ranks the states are sharded over (all ranks unless grouped)
    overrides: tuple[str, ...]

    @property
    def quantized(self) -> bool:
        """Its communication rounds weights and gradients (ZeRO++'s qwZ/qgZ): not the same numbers."""
        return self.name.startswith("zero++")

    @property
    def simulable(self) -> bool:
        """FSDP2 runs under the simulator; DeepSpeed does not (its set-up moves real data)."""
        return self.row in SIMULATED_ROWS


def hsdp_layout(group: int, world: int) -> Layout:
    """Hybrid sharding in groups of ``group`` consecutive ranks."""
    return Layout(f"hsdp {world // group} x {group}", "hsdp", group,
                  ("distributed.strategy=fsdp", f"distributed.fsdp.shard_group_size={group}"))  # fmt: skip


def layouts(world: int, gpus_per_node: int) -> list[Layout]:
    """Every layout tried for ``world`` ranks of ``gpus_per_node``, simplest first: DDP, plain
    FSDP, hybrid sharding with every group size that divides the world (a node's first), ZeRO-3,
    hpZ, ZeRO++."""
    plain = ("distributed.strategy=fsdp", "distributed.fsdp.shard_group_size=null")
    found = [Layout("ddp", "ddp", world, ("distributed.strategy=ddp",)), Layout("fsdp", "fsdp", world, plain)]
    sizes = [size for size in range(2, world) if world % size == 0]
    sizes.sort(key=lambda size: size != gpus_per_node)  # (a stable sort: the rest ascending)
    found += [hsdp_layout(size, world) for size in sizes]
    deepspeed = "distributed.strategy=deepspeed"
    found.append(Layout("zero3", "zero3", world, (deepspeed, "distributed.deepspeed.config=ds_configs/zero3.json")))
    if 1 < gpus_per_node < world and world % gpus_per_node == 0:  # hpZ's secondary partition spans a node
        found.append(Layout(f"zero3+hpz {gpus_per_node}", "zero3+hpz", gpus_per_node,
                            (deepspeed, "distributed.deepspeed.config=ds_configs/zero3_hpz.json")))  # fmt: skip
        found.append(Layout(f"zero++ {gpus_per_node}", "zero3+hpz", gpus_per_node,
                            (deepspeed, "distributed.deepspeed.config=ds_configs/zero3_zeropp.json")))  # fmt: skip
    return found


def _nodes(ranks: range, gpus_per_node: int) -> int:
    return len({rank // gpus_per_node for rank in ranks})


def _spans(group: int, world: int, gpus_per_node: int) -> int:
    """The most nodes any of the groups of ``group`` consecutive ranks spans (the step waits for
    the slowest group)."""
    return max(_nodes(range(start, start + group), gpus_per_node) for start in range(0, world, group))


def collectives(
    layout: Layout, counts: Any, hw: Any, low: int, reduce_bytes: int, accumulation: int = 1
) -> list[Traffic]:
    """Rank 0's collectives per optimizer step of ``accumulation`` micro-batches under ``layout``
    (see the module table): ``counts`` the model's (:class:`harness.plan.memory.ModelCounts`), ``hw``
    the cluster (:class:`harness.plan.simulate.Hardware`), ``low``/``reduce_bytes`` bytes per weight
    gathered and per gradient reduced. Everything runs once per micro-batch except DDP's all-reduce
    (``no_sync`` until the last), HSDP's all-reduce between the groups (the same, through FSDP2's
    ``set_requires_all_reduce``) and hpZ's gather across all ranks (the first forward fills the
    secondary partition, which every later gather of the step reads)."""
    world, group, gpn = hw.world, layout.group, hw.gpus_per_node
    if layout.row == "ddp":  # gradients all-reduced in fp32 buckets of 25 MB, once a step
        size = counts.trainable * 4
        return [Traffic("all_reduce", world, _nodes(range(world), gpn), max(1, -(-int(size) // DDP_BUCKET)), int(size))]
    if layout.row in ("fsdp", "hsdp"):
        return _fsdp(counts, world, group, gpn, low, reduce_bytes, accumulation)
    return _deepspeed(layout, counts, world, group, gpn, low, accumulation)


def _fsdp(counts: Any, world: int, group: int, gpn: int, low: int, reduce: int, accumulation: int) -> list[Traffic]:
    """FSDP2's: each unit gathered in forward and, when it trains, again in backward; its trained
    parameters reduce-scattered; under HSDP the shard all-reduced across the groups once a step."""
    units = counts.unit_bytes(group, low, reduce)  # the blocks in forward order, the root last
    trained = [unit for unit in units if unit[1]]
    # a unit with trained parameters runs backward (re-gathered: reshard_after_forward)
    gathers = sum(2 if unit[1] else 1 for unit in units)
    gathered = sum(unit[0] * (2 if unit[1] else 1) for unit in units)
    # FSDP2's backward prefetches the unit before the earliest trained block in forward order even
    # when it is frozen and runs no backward (a frozen encoder's last block): one gather more
    first = next((index for index, unit in enumerate(units[:-1]) if unit[1]), len(units) - 1)
    if first > 0:
        gathers, gathered = gathers + 1, gathered + units[first - 1][0]
    inside = _spans(group, world, gpn)
    found = [Traffic("all_gather", group, inside, gathers * accumulation, int(gathered) * accumulation),
             Traffic("reduce_scatter", group, inside, len(trained) * accumulation,
                     int(sum(unit[1] for unit in trained)) * accumulation)]  # fmt: skip
    if group < world:
        across = range(0, world, group)
        found.append(Traffic("all_reduce", len(across), _nodes(across, gpn), len(trained),
                             int(sum(unit[2] for unit in trained))))  # fmt: skip
    return [t for t in found if t.count]


def _deepspeed(layout: Layout, counts: Any, world: int, group: int, gpn: int, low: int, acc: int) -> list[Traffic]:
    """DeepSpeed's ZeRO-3, hpZ and ZeRO++ (its accounting: the module table)."""
    units, p, q = counts.depth + 1, counts.total, counts.trainable
    every, node = _nodes(range(world), gpn), _nodes(range(min(gpn, world)), gpn)
    if layout.name == "zero3":
        return [Traffic("all_gather", world, every, 2 * units * acc, int(2 * p * low) * acc),
                Traffic("reduce_scatter", world, every, units * acc, int(q * low) * acc)]  # fmt: skip
    # hpZ: the first forward gathers across all ranks; every later gather of the step (the
    # backward's, the next micro-batches') reads the node's secondary partition
    weight = 1 if layout.quantized else low  # qwZ: int8 (and an fp32 scale per ~8k values)
    gathers = [Traffic("all_gather", world, every, units, int(p * weight)),
               Traffic("all_gather", group, node, units * (2 * acc - 1), int(p * weight) * (2 * acc - 1))]  # fmt: skip
    if not layout.quantized:
        return [*gathers, Traffic("reduce_scatter", world, every, units * acc, int(q * low) * acc)]
    across = range(0, world, group)  # qgZ: int4 all-to-all inside the node, then 1/G of it across
    spans = _nodes(across, gpn)
    return [*gathers, Traffic("reduce_scatter", group, node, units * acc, int(q * 0.5) * acc),
            Traffic("reduce_scatter", len(across), spans, units * acc, int(q / group * 0.5) * acc)]  # fmt: skip


def configured_layout(distributed: Any, world: int, gpus_per_node: int) -> Layout | None:
    """The layout a config's ``distributed`` section runs at ``world`` ranks (``auto``: DDP), or
    None for one that ``--suggest`` does not time (ZeRO-1/2, host offload, an unreadable JSON).
    A group size the world does not split into is the run's own one-line error."""
    from harness.parallel.fsdp import hybrid_mesh_shape

    known = {layout.name: layout for layout in layouts(world, gpus_per_node)}
    if distributed.strategy == "fsdp":
        if distributed.fsdp.cpu_offload:
            return None
        shape = hybrid_mesh_shape(distributed.fsdp.shard_group_size, world, gpus_per_node)
        return hsdp_layout(shape[1], world) if shape else known["fsdp"]
    if distributed.strategy != "deepspeed":
        return known["ddp"]
    zero = _zero_section(distributed.deepspeed.config)
    offload = any((zero or {}).get(key, {}).get("device", "none") not in ("none", None)
                  for key in ("offload_param", "offload_optimizer"))  # fmt: skip
    if zero is None or zero.get("stage") != 3 or offload:
        return None
    if zero.get("zero_quantized_weights") or zero.get("zero_quantized_gradients"):
        return known.get(f"zero++ {gpus_per_node}", known["zero3"])
    if zero.get("zero_hpz_partition_size", 1) not in (1, None):
        return known.get(f"zero3+hpz {gpus_per_node}", known["zero3"])
    return known["zero3"]


def _zero_section(path: str | None) -> dict | None:
    """The ``zero_optimization`` section of a DeepSpeed JSON (None: unreadable; no JSON: ZeRO-2)."""
    import json
    from pathlib import Path

    if path is None:
        return {"stage": 2}
    try:
        zero = json.loads(Path(path).read_text(encoding="utf-8")).get("zero_optimization", {})
    except (OSError, ValueError, AttributeError):
        return None
    return zero if isinstance(zero, dict) else None
