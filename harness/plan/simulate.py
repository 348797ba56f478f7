"""A training step at cluster scale, simulated on one CPU: ``python -m harness.plan ... --simulate``.

The config's real model is built on the meta device and wrapped by the real FSDP2 strategy code
(:class:`harness.parallel.fsdp.FSDPStrategy`, plain or hybrid: ``distributed.fsdp.shard_group_size``
gives the same 2-D mesh as a real run) under PyTorch's fake process group of the full world size
(``gpus x nodes``), then materialised as fake tensors (shapes and dtypes, no memory) and put
through real training steps (one to warm up, one measured: forward, backward, clipping, AdamW):
so what it reports is what the code does, not a formula.

* Memory per rank by category at the peak, from PyTorch's ``FSDPMemTracker``: sharded weights,
  gathered (unsharded) weights, gradients, optimizer state, activations, temporaries, the
  collectives' buffers.
* Collectives per rank per step, recorded as FSDP2 issues them: by kind and by process group
  (its ranks, and how many nodes it spans), count and bytes. Under hybrid sharding the
  all-gathers and reduce-scatters stay in the shard group and an all-reduce crosses the groups.
* A predicted step time and MFU on a named GPU: compute = the training FLOPs per rank, plus the
  forward that activation checkpointing runs again, / (peak x ``efficiency``); communication =
  ring traffic (``bytes x (g - 1) / g`` for a gather or reduce-scatter over ``g`` ranks, twice
  that for an all-reduce) over the link the group crosses: NVLink inside a node, the network
  between nodes (per GPU), timed apart and added (FSDP2 issues them on one stream); overlap as
  FSDP2 does it: the step takes ``max(compute, communication)`` plus the first all-gather and the
  last reduction, which nothing hides. MFU counts the model's FLOPs only (recomputation is time).

DeepSpeed and DDP cannot run on fake tensors under a fake process group (their set-up moves real
data), so their rows stay the planner's formulas; FSDP2 (plain and hybrid) is what is simulated.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F

from harness.config import Config
from harness.core.crop import crop_hw
from harness.parallel.layouts import Traffic
from harness.parallel.registry import SIMULATED_STRATEGY
from harness.training.tracking.observability import GPU_PEAK_TFLOPS

#: dense bf16 peak FLOP/s per GPU: the table the trainer's MFU uses (``--gpu h100``, ``gh200``, ...)
GPU_PEAKS = {name.lower().replace(" ", "-"): tensor * 1e12 for name, (tensor, _) in GPU_PEAK_TFLOPS.items()}
# torch.distributed's collectives -> the name recorded (FSDP2 calls the *_single ones from torch
# 2.10 on, all_gather_into_tensor / reduce_scatter_tensor before)
RECORDED = {"all_gather_single": "all_gather", "all_gather_into_tensor": "all_gather",
            "reduce_scatter_single": "reduce_scatter", "reduce_scatter_tensor": "reduce_scatter",
            "all_reduce": "all_reduce", "broadcast": "broadcast"}  # fmt: skip
# FSDPMemTracker's categories, and the planner's names for them
CATEGORIES = {"Sharded Param": "weights", "Unsharded Param": "gathered", "Sharded Grad": "gradients",
              "Unsharded Grad": "gathered grads", "OptState": "optimizer", "Activation": "activations",
              "Temp": "temporaries", "All Gather": "all-gather buffers", "Reduce Scatter": "reduce-scatter buffers",
              "Buffer": "buffers", "Inputs": "inputs"}  # fmt: skip


@dataclass
class Hardware:
    """What the prediction assumes about the machine."""

    gpu: str = "h100"  #: a key of :data:`GPU_PEAKS`
    gpus_per_node: int = 8
    nodes: int = 1
    intra_node_gbps: float = 3600.0  #: Gbit/s per GPU and direction inside a node (NVLink 4: 450 GB/s)
    inter_node_gbps: float = 400.0  #: Gbit/s per GPU between nodes (one 400G NIC per GPU)
    efficiency: float = 0.45  #: fraction of the peak the model's matmuls reach

    def __post_init__(self) -> None:
        """Refuse what the prediction would divide by zero or print as nonsense (``harness.plan``
        checks its options first and names them)."""
        counts = {"gpus_per_node": self.gpus_per_node, "nodes": self.nodes}
        rates = {"intra_node_gbps": self.intra_node_gbps, "inter_node_gbps": self.inter_node_gbps}
        wrong = [f"{name} must be >= 1" for name, value in counts.items() if not value >= 1]
        wrong += [f"{name} must be > 0" for name, value in rates.items() if not 0 < value < float("inf")]
        wrong += [] if 0 < self.efficiency <= 1 else ["efficiency must be in (0, 1]"]
        if wrong:
            raise ValueError(f"Hardware: {'; '.join(wrong)} (got {self})")

    @property
    def world(self) -> int:
        """Ranks in all."""
        return self.gpus_per_node * self.nodes


@dataclass
class Simulation:
    """One simulated rank's step."""

    hardware: Hardware
    memory: dict[str, int]  #: bytes at the peak by category
    collectives: list[Traffic] = field(default_factory=list)
    flops: float = 0.0  #: the model's training FLOPs per rank per step (what MFU counts)
    recomputed: float = 0.0  #: FLOPs activation checkpointing runs again (time, not MFU)
    accumulation: int = 1  #: micro-batches per step (an all-reduce once a step overlaps only the last)
    compute_s: float = 0.0
    intra_s: float = 0.0  #: communication on the links inside a node
    inter_s: float = 0.0  #: communication between nodes
    exposed_s: float = 0.0
    step_s: float = 0.0

    @property
    def communication_s(self) -> float:
        return self.intra_s + self.inter_s

    @property
    def mfu(self) -> float:
        """Model FLOPs utilisation of the predicted step."""
        return self.flops / self.step_s / GPU_PEAKS[self.hardware.gpu] if self.step_s else 0.0

    def totals(self) -> dict[str, list[int]]:
        """name -> [calls, bytes] per step, over every group."""
        out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for traffic in self.collectives:
            out[traffic.name][0] += traffic.count
            out[traffic.name][1] += traffic.bytes
        return dict(out)


def _group_ranks(args: tuple, kwargs: dict) -> list[int]:
    """The ranks of the process group a collective was called on (the default group: all)."""
    groups = [a for a in (*args, *kwargs.values()) if isinstance(a, dist.ProcessGroup)]
    if not groups:
        return list(range(dist.get_world_size()))
    return dist.get_process_group_ranks(groups[0])


@contextlib.contextmanager
def recorded_collectives(gpus_per_node: int) -> Iterator[list[Traffic]]:
    """Record the collectives called through ``torch.distributed``: by kind and group, the calls
    and the bytes they produce (the list is filled when the block ends)."""
    counts: dict[tuple[str, int, int], list[int]] = defaultdict(lambda: [0, 0])
    originals = {name: getattr(dist, name) for name in RECORDED if hasattr(dist, name)}

    def recorder(name: str, original):
        def record(*args, **kwargs):
            tensors = [t for t in (*args, *kwargs.values()) if isinstance(t, torch.Tensor)]
            ranks = _group_ranks(args, kwargs)
            key = (RECORDED[name], len(ranks), len({rank // gpus_per_node for rank in ranks}))
            counts[key][0] += 1  # bytes: the full-size side (a gather's output, a reduce-scatter's input)
            counts[key][1] += max(t.numel() * t.element_size() for t in tensors)
            return original(*args, **kwargs)

        return record

    recorded: list[Traffic] = []
    for name, original in originals.items():
        setattr(dist, name, recorder(name, original))
    try:
        yield recorded
    finally:
        for name, original in originals.items():
            setattr(dist, name, original)
        recorded.extend(Traffic(name, ranks, nodes, count, size)
                        for (name, ranks, nodes), (count, size) in sorted(counts.items()))  # fmt: skip


def join_fake_world(world: int) -> None:
    """This process as rank 0 of a fake process group of ``world`` ranks (no communication)."""
    from torch.testing._internal.distributed.fake_pg import FakeStore

    if dist.is_initialized():
        if dist.get_world_size() == world and dist.get_backend() == "fake":
            return
        dist.destroy_process_group()
    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=world)


def simulate(config: Config, hardware: Hardware, num_classes: int, steps: int = 1) -> Simulation:
    """Run ``steps`` fake training steps of ``config`` under FSDP2 at ``hardware.world`` ranks."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributed._tools.fsdp2_mem_tracker import FSDPMemTracker

    from harness.parallel.precision import Precision
    from harness.parallel.registry import STRATEGY_SPECS
    from harness.training.assemble import build_model
    from harness.training.optim import build_optimizer

    join_fake_world(hardware.world)
    meta = dataclasses.replace(config.meta, pretrain_checkpoint=None, classifier_checkpoint=None, device="cpu")
    config = dataclasses.replace(config, meta=meta, model=dataclasses.replace(config.model, compile_model=False))
    spec = STRATEGY_SPECS[SIMULATED_STRATEGY]
    options = spec.options(config.distributed, config.data, config.optimization)
    cpu = torch.device("cpu")
    strategy = spec.implementation()(cpu, Precision(config.meta.dtype, cpu), 0, hardware.world,
                                     local_world_size=hardware.gpus_per_node, **options)  # fmt: skip
    with torch.device("meta"):
        model = build_model(config, num_classes, device="meta")
    opt = config.optimization
    model, optimizer = strategy.prepare(model, lambda m: build_optimizer(opt, m, cpu))
    data = config.data
    with FakeTensorMode(allow_non_fake_inputs=True):
        model.to_empty(device=cpu)
        clips = torch.randn(data.batch_size, data.num_clips, 3, max(data.dataset_fpcs), *crop_hw(data.crop_size))
        labels = torch.zeros(data.batch_size, dtype=torch.long)

        def train_step(reset: Callable[[], None] | None = None) -> None:
            # as the trainer runs it: each micro-batch's backward inside strategy.accumulate
            # (under HSDP only the last all-reduces between the groups); ``reset``: the memory
            # tracker's, which takes one forward per module between resets (the peak is kept)
            for index in range(opt.accumulation_steps):
                if index and reset is not None:
                    reset()
                with strategy.accumulate(model, sync=index == opt.accumulation_steps - 1):
                    with strategy.precision.autocast():
                        loss = F.cross_entropy(model(clips).float(), labels)
                    loss.backward()
            strategy.optimizer_step(model, optimizer, opt.clip_grad)
            optimizer.zero_grad(set_to_none=True)

        # One step before tracking: FSDP2's lazy initialisation allocates full-size fp32 tensors
        # once, which the tracker would count as activations of every step.
        train_step()
        tracker = FSDPMemTracker(model, optimizer)
        tracker.track_inputs((clips,))
        with tracker, recorded_collectives(hardware.gpus_per_node) as recorded:
            for step in range(steps):
                if step:
                    tracker.reset_mod_stats()  # (the peak is kept across steps)
                train_step(tracker.reset_mod_stats)
        peak = next(iter(tracker.get_tracker_snapshot("peak").values()))
    named = {getattr(kind, "value", str(kind)): int(size) for kind, size in peak.items()}
    memory = {CATEGORIES.get(kind, kind): size for kind, size in named.items() if kind != "Total"}
    per_step = [dataclasses.replace(t, count=t.count // steps, bytes=t.bytes // steps) for t in recorded]
    encoder = strategy.unwrap(model).encoder
    clips = data.batch_size * data.num_clips * opt.accumulation_steps
    forward = encoder.forward_flops(max(data.dataset_fpcs), *crop_hw(data.crop_size))
    flops, recomputed = training_flops(forward, len(encoder.blocks), config)
    return predict(Simulation(hardware, memory, per_step, flops * clips, recomputed * clips, opt.accumulation_steps))


def training_flops(forward: float, depth: int, config: Config) -> tuple[float, float]:
    """(the model's training FLOPs, the FLOPs activation checkpointing runs again) per clip, from
    the encoder's forward FLOPs: 3x forward when it trains, 1x when frozen; the recomputation is the
    forward of every checkpointed block (the step takes it; MFU does not count it)."""
    trains = config.meta.finetune_encoder
    model = config.model
    every = model.activation_checkpointing_every
    recomputed = forward * (depth // every) / depth if model.use_activation_checkpointing and trains else 0.0
    return float(forward * (3 if trains else 1)), float(recomputed)


def predict(sim: Simulation) -> Simulation:
    """Fill in the predicted compute, communication and step time (see the module docs)."""
    hw = sim.hardware
    sim.compute_s = (sim.flops + sim.recomputed) / (GPU_PEAKS[hw.gpu] * hw.efficiency)
    per_second = {1: hw.intra_node_gbps * 1e9 / 8}  # bytes per second per GPU, by "spans one node"

    def seconds(traffic: Traffic, sent: float) -> float:
        return sent / (per_second[1] if traffic.nodes == 1 else hw.inter_node_gbps * 1e9 / 8)

    sim.intra_s = sum(seconds(t, t.sent) for t in sim.collectives if t.nodes == 1)
    sim.inter_s = sum(seconds(t, t.sent) for t in sim.collectives if t.nodes > 1)
    # the first gather and the last reduction of a unit, which no compute hides
    largest: dict[str, float] = defaultdict(float)
    for traffic in sim.collectives:
        if traffic.count:
            largest[traffic.name] = max(largest[traffic.name], seconds(traffic, traffic.sent / traffic.count))
    sim.exposed_s = largest["all_gather"] + largest["reduce_scatter"] + largest["all_reduce"]
    # an all-reduce (DDP's buckets, HSDP's between the groups) can only hide behind the backward of
    # the step's last micro-batch (about 2/3 of its compute); the rest of it waits after compute
    reduced = sum(seconds(t, t.sent) for t in sim.collectives if t.name == "all_reduce")
    window = sim.compute_s * 2 / 3 / sim.accumulation
    hidden = min(reduced, window)
    sim.exposed_s += reduced - hidden
    sim.step_s = max(sim.compute_s, sim.communication_s - reduced + hidden) + sim.exposed_s
    return sim


def layout_name(config: Config, hardware: Hardware) -> str:
    """``fsdp`` over all ranks, or ``hsdp G x S`` (G groups of S ranks)."""
    from harness.parallel.fsdp import hybrid_mesh_shape

    shape = hybrid_mesh_shape(config.distributed.fsdp.shard_group_size, hardware.world, hardware.gpus_per_node)
    return f"hsdp {shape[0]} x {shape[1]}" if shape else SIMULATED_STRATEGY


def report(sim: Simulation, planned: float | None = None, gpu_memory_gib: float | None = None, layout: str = "") -> str:
    """The simulation as text; ``planned``: the planner's total for the row (bytes) to compare with;
    ``gpu_memory_gib``: say whether the peak fits (with 10% left for the framework)."""
    hw = sim.hardware
    gib = 1024**3
    where = f"{hw.world} ranks ({hw.nodes} node(s) x {hw.gpus_per_node})"
    lines = [f"simulated {layout or SIMULATED_STRATEGY} step at {where}, per rank:",
             "  memory at the peak (GiB): " + ", ".join(f"{k} {v / gib:.2f}" for k, v in sim.memory.items() if v),
             f"  total {sum(sim.memory.values()) / gib:.2f} GiB"]  # fmt: skip
    if planned:
        lines[-1] += f"; planner {planned / gib:.2f} GiB (simulated / planned {sum(sim.memory.values()) / planned:.2f})"
    if gpu_memory_gib:
        fits = sum(sim.memory.values()) / gib < 0.9 * gpu_memory_gib
        lines[-1] += f"; {'fits' if fits else 'does NOT fit'} in {gpu_memory_gib:g} GiB"
    for t in sim.collectives:
        where = "inside a node" if t.nodes == 1 else f"across {t.nodes} nodes"
        lines.append(f"  {t.name} over {t.ranks} ranks ({where}): {t.count} per step, {t.bytes / gib:.2f} GiB, "
                     f"{t.sent / gib:.2f} GiB sent")  # fmt: skip
    recompute = f" (+{sim.recomputed / sim.flops:.0%} recomputed)" if sim.recomputed else ""
    lines.append(
        f"  predicted on {hw.gpu} ({hw.efficiency:.0%} of {GPU_PEAKS[hw.gpu] / 1e12:.0f} TFLOP/s bf16; "
        f"{hw.intra_node_gbps:g} Gbit/s in a node, {hw.inter_node_gbps:g} Gbit/s between nodes per GPU): "
        f"compute {sim.compute_s * 1e3:.0f} ms{recompute}, communication {sim.communication_s * 1e3:.0f} ms "
        f"({sim.intra_s * 1e3:.0f} inside nodes + {sim.inter_s * 1e3:.0f} between; overlapped, "
        f"{sim.exposed_s * 1e3:.0f} ms exposed), step {sim.step_s * 1e3:.0f} ms, MFU {sim.mfu:.0%}"
    )
    return "\n".join(lines)
