"""A training step at cluster scale, simulated on one CPU: ``python -m harness.plan ... --simulate``.

The config's real model is built on the meta device and wrapped by the real FSDP2 strategy code
(:class:`harness.parallel.fsdp.FSDPStrategy`) under PyTorch's fake process group of the full world
size (``gpus x nodes``), then materialised as fake tensors (shapes and dtypes, no memory) and put
through two real training steps (forward, backward, clipping, AdamW): so what it reports is what
the code does, not a formula.

* Memory per rank by category at the peak, from PyTorch's ``FSDPMemTracker``: sharded weights,
  gathered (unsharded) weights, gradients, optimizer state, activations, temporaries, the
  collectives' buffers.
* Collectives per rank per step, recorded as FSDP2 issues them: count and bytes of all-gathers
  and reduce-scatters.
* A predicted step time and MFU on a named GPU: compute = the model's training FLOPs per rank /
  (peak x ``efficiency``); communication = ring traffic ``bytes x (W - 1) / W`` over the
  slowest link a collective crosses (NVLink inside a node, the network between nodes, per GPU);
  overlap as FSDP2 does it: the step takes ``max(compute, communication)`` plus the first
  all-gather and the last reduce-scatter, which nothing hides.

DeepSpeed and DDP cannot run on fake tensors under a fake process group (their set-up moves real
data), so their rows stay the planner's formulas; ``fsdp`` is the one simulated.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F

from harness.config import Config
from harness.core.errors import UserError
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
    collectives: dict[str, list[int]] = field(default_factory=dict)  #: name -> [count, bytes] per step
    flops: float = 0.0  #: training FLOPs per rank per step
    compute_s: float = 0.0
    communication_s: float = 0.0
    exposed_s: float = 0.0
    step_s: float = 0.0

    @property
    def mfu(self) -> float:
        """Model FLOPs utilisation of the predicted step."""
        return self.flops / self.step_s / GPU_PEAKS[self.hardware.gpu] if self.step_s else 0.0


@contextlib.contextmanager
def recorded_collectives() -> Iterator[dict[str, list[int]]]:
    """Count the collectives called through ``torch.distributed`` and the bytes they produce."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    originals = {name: getattr(dist, name) for name in RECORDED if hasattr(dist, name)}

    def recorder(name: str, original):
        def record(*args, **kwargs):
            tensors = [t for t in (*args, *kwargs.values()) if isinstance(t, torch.Tensor)]
            counts[RECORDED[name]][0] += 1  # bytes: the full-size side (a gather's output, a reduce-scatter's input)
            counts[RECORDED[name]][1] += max(t.numel() * t.element_size() for t in tensors)
            return original(*args, **kwargs)

        return record

    for name, original in originals.items():
        setattr(dist, name, recorder(name, original))
    try:
        yield counts
    finally:
        for name, original in originals.items():
            setattr(dist, name, original)


def join_fake_world(world: int) -> None:
    """This process as rank 0 of a fake process group of ``world`` ranks (no communication)."""
    from torch.testing._internal.distributed.fake_pg import FakeStore

    if dist.is_initialized():
        if dist.get_world_size() == world and dist.get_backend() == "fake":
            return
        dist.destroy_process_group()
    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=world)


def simulate(config: Config, hardware: Hardware, num_classes: int, steps: int = 2) -> Simulation:
    """Run ``steps`` fake training steps of ``config`` under FSDP2 at ``hardware.world`` ranks."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributed._tools.fsdp2_mem_tracker import FSDPMemTracker

    from harness.parallel.precision import Precision
    from harness.parallel.registry import STRATEGY_SPECS
    from harness.training.assemble import build_model
    from harness.training.optim import build_optimizer
    from harness.training.tracking.observability import flops_per_clip

    join_fake_world(hardware.world)
    meta = dataclasses.replace(config.meta, pretrain_checkpoint=None, classifier_checkpoint=None, device="cpu")
    config = dataclasses.replace(config, meta=meta, model=dataclasses.replace(config.model, compile_model=False))
    spec = STRATEGY_SPECS[SIMULATED_STRATEGY]
    options = spec.options(config.distributed, config.data, config.optimization)
    if options.get("shard_group_size") is not None:
        # HSDP under the fake process group is the next part of issue 30; until then say so
        raise UserError("--simulate runs plain FSDP over all ranks: unset distributed.fsdp.shard_group_size to "
                        "simulate (hybrid sharding is not simulated yet)")  # fmt: skip
    cpu = torch.device("cpu")
    strategy = spec.implementation()(cpu, Precision(config.meta.dtype, cpu), 0, hardware.world, **options)
    with torch.device("meta"):
        model = build_model(config, num_classes, device="meta")
    opt = config.optimization
    model, optimizer = strategy.prepare(model, lambda m: build_optimizer(opt, m, cpu))
    data = config.data
    with FakeTensorMode(allow_non_fake_inputs=True):
        model.to_empty(device=cpu)
        clips = torch.randn(data.batch_size, data.num_clips, 3, max(data.dataset_fpcs), data.crop_size, data.crop_size)
        labels = torch.zeros(data.batch_size, dtype=torch.long)

        def train_step() -> None:
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
        with tracker, recorded_collectives() as counts:
            for step in range(steps):
                if step:
                    tracker.reset_mod_stats()  # (the peak is kept across steps)
                train_step()
        peak = next(iter(tracker.get_tracker_snapshot("peak").values()))
    named = {getattr(kind, "value", str(kind)): int(size) for kind, size in peak.items()}
    memory = {CATEGORIES.get(kind, kind): size for kind, size in named.items() if kind != "Total"}
    per_step = {name: [count // steps, size // steps] for name, (count, size) in counts.items()}
    encoder = strategy.unwrap(model).encoder
    flops = flops_per_clip(encoder, config, config.meta.finetune_encoder) * data.batch_size * data.num_clips
    return predict(Simulation(hardware, memory, per_step, float(flops)))


def predict(sim: Simulation) -> Simulation:
    """Fill in the predicted compute, communication and step time (see the module docs)."""
    hw = sim.hardware
    sim.compute_s = sim.flops / (GPU_PEAKS[hw.gpu] * hw.efficiency)
    link = hw.intra_node_gbps if hw.nodes == 1 else hw.inter_node_gbps
    bandwidth = link * 1e9 / 8  # bytes per second per GPU
    fraction = (hw.world - 1) / hw.world
    traffic = sum(size for count, size in sim.collectives.values()) * fraction
    sim.communication_s = traffic / bandwidth
    largest = max((size / count for count, size in sim.collectives.values() if count), default=0.0)
    sim.exposed_s = 2 * largest * fraction / bandwidth  # the first gather and the last reduce-scatter
    sim.step_s = max(sim.compute_s, sim.communication_s) + sim.exposed_s
    return sim


def report(sim: Simulation, planned: dict[str, float] | None = None, gpu_memory_gib: float | None = None) -> str:
    """The simulation as text; ``planned``: the planner's fsdp row (bytes) to compare with;
    ``gpu_memory_gib``: say whether the peak fits (with 10% left for the framework)."""
    hw = sim.hardware
    gib = 1024**3
    where = f"{hw.world} ranks ({hw.nodes} node(s) x {hw.gpus_per_node})"
    lines = [f"simulated {SIMULATED_STRATEGY} step at {where}, per rank:",
             "  memory at the peak (GiB): " + ", ".join(f"{k} {v / gib:.2f}" for k, v in sim.memory.items() if v),
             f"  total {sum(sim.memory.values()) / gib:.2f} GiB"]  # fmt: skip
    if planned:
        total = sum(planned.values())
        lines[-1] += f"; planner {total / gib:.2f} GiB (simulated / planned {sum(sim.memory.values()) / total:.2f})"
    if gpu_memory_gib:
        fits = sum(sim.memory.values()) / gib < 0.9 * gpu_memory_gib
        lines[-1] += f"; {'fits' if fits else 'does NOT fit'} in {gpu_memory_gib:g} GiB"
    for name, (count, size) in sorted(sim.collectives.items()):
        lines.append(f"  {name}: {count} per step, {size / gib:.2f} GiB")
    lines.append(
        f"  predicted on {hw.gpu} ({hw.efficiency:.0%} of {GPU_PEAKS[hw.gpu] / 1e12:.0f} TFLOP/s bf16; "
        f"{hw.intra_node_gbps:g} Gbit/s in a node, {hw.inter_node_gbps:g} Gbit/s between nodes per GPU): "
        f"compute {sim.compute_s * 1e3:.0f} ms, communication {sim.communication_s * 1e3:.0f} ms "
        f"(overlapped; {sim.exposed_s * 1e3:.0f} ms exposed), step {sim.step_s * 1e3:.0f} ms, MFU {sim.mfu:.0%}"
    )
    return "\n".join(lines)
