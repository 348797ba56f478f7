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

from dataclasses import dataclass, replace
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


def layouts(world: int, gpus_per_node: int) -> list[Layout]:
    """Every layout tried for ``world`` ranks of ``gpus_per_node``."""
    fsdp = ("distributed.strategy=fsdp",)
    found = [Layout("ddp", "ddp", world, ("distributed.strategy=ddp",)),
             Layout("fsdp", "fsdp", world, (*fsdp, "distributed.fsdp.shard_group_size=null"))]  # fmt: skip
    size = 2
    while size < world:
        if world % size == 0:
            found.append(Layout(f"hsdp {world // size} x {size}", "hsdp", size,
                                (*fsdp, f"distributed.fsdp.shard_group_size={size}")))  # fmt: skip
        size *= 2
    deepspeed = "distributed.strategy=deepspeed"
    found.append(Layout("zero3", "zero3", world, (deepspeed, "distributed.deepspeed.config=ds_configs/zero3.json")))
    if 1 < gpus_per_node < world:  # hpZ's secondary partition spans a node
        found.append(Layout(f"zero3+hpz {gpus_per_node}", "zero3+hpz", gpus_per_node,
                            (deepspeed, "distributed.deepspeed.config=ds_configs/zero3_hpz.json")))  # fmt: skip
        found.append(Layout(f"zero++ {gpus_per_node}", "zero3+hpz", gpus_per_node,
                            (deepspeed, "distributed.deepspeed.config=ds_configs/zero3_zeropp.json")))  # fmt: skip
    return found


def _nodes(ranks: range, gpus_per_node: int) -> int:
    return len({rank // gpus_per_node for rank in ranks})


def collectives(
    layout: Layout, counts: Any, hw: Any, low: int, reduce_bytes: int, accumulation: int = 1
) -> list[Traffic]:
    """Rank 0's collectives per optimizer step of ``accumulation`` micro-batches under ``layout``
    (see the module table): ``counts`` the model's (:class:`harness.plan.memory.ModelCounts`), ``hw``
    the cluster (:class:`harness.plan.simulate.Hardware`), ``low``/``reduce_bytes`` bytes per weight
    gathered and per gradient reduced. Everything runs once per micro-batch except DDP's all-reduce
    (``no_sync`` until the last) and HSDP's all-reduce between the groups (the same, through
    FSDP2's ``set_requires_all_reduce``)."""
    once = {"all_reduce"} if layout.row in ("ddp", "hsdp") else set()
    return [
        t if t.name in once else replace(t, count=t.count * accumulation, bytes=t.bytes * accumulation)
        for t in _per_micro_batch(layout, counts, hw, low, reduce_bytes)
    ]


def _per_micro_batch(layout: Layout, counts: Any, hw: Any, low: int, reduce_bytes: int) -> list[Traffic]:
    world, group, units = hw.world, layout.group, counts.depth + 1
    gpn = hw.gpus_per_node
    every = _nodes(range(world), gpn)
    node = _nodes(range(min(gpn, world)), gpn)
    if layout.row == "ddp":  # gradients all-reduced in fp32 buckets of 25 MB
        size = counts.trainable * 4
        return [Traffic("all_reduce", world, every, max(1, -(-int(size) // DDP_BUCKET)), int(size))]
    if layout.row in ("fsdp", "hsdp"):
        p_shard, q_shard = counts.shard(group)
        inside = _nodes(range(group), gpn)
        found = [Traffic("all_gather", group, inside, 2 * units, int(2 * p_shard * group * low)),
                 Traffic("reduce_scatter", group, inside, units, int(q_shard * group * reduce_bytes))]  # fmt: skip
        if group < world:
            across = range(0, world, group)
            found.append(Traffic("all_reduce", len(across), _nodes(across, gpn), units, int(q_shard * reduce_bytes)))
        return found
    p, q = counts.total, counts.trainable
    if layout.name == "zero3":
        return [Traffic("all_gather", world, every, 2 * units, int(2 * p * low)),
                Traffic("reduce_scatter", world, every, units, int(q * low))]  # fmt: skip
    if layout.name.startswith("zero3+hpz"):  # backward: from the node's secondary partition
        return [Traffic("all_gather", world, every, units, int(p * low)),
                Traffic("all_gather", group, node, units, int(p * low)),
                Traffic("reduce_scatter", world, every, units, int(q * low))]  # fmt: skip
    across = range(0, world, group)
    return [
        Traffic("all_gather", world, every, units, int(p)),  # int8 weights, forward
        Traffic("all_gather", group, node, units, int(p)),  # and backward, inside the node
        Traffic("reduce_scatter", group, node, units, int(q * 0.5)),  # int4 gradients inside the node,
        Traffic("reduce_scatter", len(across), _nodes(across, gpn), units, int(q / group * 0.5)),
    ]  # then across


def configured_layout(distributed: Any, world: int, gpus_per_node: int) -> Layout:
    """The layout a config's ``distributed`` section runs at ``world`` ranks (``auto``: DDP)."""
    size = distributed.fsdp.shard_group_size
    group = gpus_per_node if size in ("auto", 0) else size
    grouped = distributed.strategy == "fsdp" and isinstance(group, int) and 1 <= group < world
    wanted = {"fsdp": "fsdp", "deepspeed": "zero3"}.get(distributed.strategy, "ddp")
    for item in layouts(world, gpus_per_node):
        if (item.row == "hsdp" and item.group == group) if grouped else item.name == wanted:
            return item
    raise ValueError(f"no layout for {distributed.strategy} at {world} ranks")
