"""``python -m harness.plan --config CFG --gpus 8 --nodes 128 --suggest``: which layout to run.

For a config, a cluster and a global batch (default: the config's per-GPU batch at that scale),
every candidate is tried: micro-batch x accumulation (their product is the per-GPU batch, so the
global batch never grows), activation checkpointing (off, every block, every other block) and the
layout (plain FSDP over all ranks; hybrid sharding with each group size that divides the world;
ZeRO-3; ZeRO-3 with hpZ; ZeRO++: hpZ with quantized weights and gradients). Candidates whose
planned memory exceeds the GPU's less the margin are dropped; the rest are ranked by predicted
step time, and the best few printed with the overrides that select them.

How each number is predicted, and what says so in the table's ``by`` column:

* ``formulas``: memory from the planner (:mod:`harness.plan.memory`, FSDP2's padding counted);
  the collectives written down from how each layout communicates (below), timed like the
  simulator does (:func:`harness.plan.simulate.predict`: ring traffic over the link the group
  crosses, the step taking the longer of compute and communication plus what cannot overlap).
* ``simulated`` (with ``--simulate``): the best FSDP/HSDP candidates run through the simulator (the
  real FSDP2 code, fake tensors, a fake process group of the full world), which replaces both
  memory and collectives by what it recorded. DeepSpeed's layouts stay formulas.

The collectives each layout issues are written down in :mod:`harness.parallel.layouts`.

Activation checkpointing costs time, not MFU: the checkpointed blocks' forward runs again in
backward, which the compute time includes and the model FLOPs (MFU's numerator) do not.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from harness.config import Config
from harness.core.errors import UserError
from harness.parallel.layouts import Layout, collectives, configured_layout, layouts
from harness.plan.memory import GIB, ModelCounts, row_plan
from harness.plan.simulate import Hardware, Simulation, predict

QUANTIZED_HANDICAP = 1.05  #: ranked as if this much slower (see :func:`candidates`)
#: activation checkpointing choices: name -> (use_activation_checkpointing, every k-th block)
CHECKPOINTING = {"off": (False, 1), "every block": (True, 1), "every other block": (True, 2)}


@dataclass(frozen=True)
class Candidate:
    """One predicted way to run the config."""

    layout: Layout
    micro_batch: int
    accumulation: int
    checkpointing: str  #: a key of :data:`CHECKPOINTING`
    memory: float  #: bytes per GPU
    sim: Simulation  #: the predicted step (its collectives, compute and times)
    by: str = "formulas"  #: or ``simulated``

    def overrides(self) -> list[str]:
        """The config overrides that run this candidate."""
        on, every = CHECKPOINTING[self.checkpointing]
        return [*self.layout.overrides, f"data.batch_size={self.micro_batch}",
                f"optimization.accumulation_steps={self.accumulation}",
                f"model.use_activation_checkpointing={str(on).lower()}",
                *([f"model.activation_checkpointing_every={every}"] if on else [])]  # fmt: skip


def predicted(
    config: Config,
    counts: ModelCounts,
    hw: Hardware,
    layout: Layout,
    micro_batch: int,
    accumulation: int,
    checkpointing: str,
) -> Candidate:
    """One candidate predicted by the formulas."""
    on, every = CHECKPOINTING[checkpointing]
    tried = dataclasses.replace(
        config,
        data=dataclasses.replace(config.data, batch_size=micro_batch),
        model=dataclasses.replace(config.model, use_activation_checkpointing=on, activation_checkpointing_every=every),
        optimization=dataclasses.replace(config.optimization, accumulation_steps=accumulation),
    )
    low = 2 if config.meta.dtype in ("bfloat16", "float16") else 4
    memory = row_plan(layout.row, tried, counts, hw.world, layout.group).total
    reduce_dtype = config.distributed.fsdp.reduce_dtype
    reduce_bytes = 4 if reduce_dtype == "float32" else 2
    traffic = collectives(layout, counts, hw, low, reduce_bytes, accumulation)
    clips = micro_batch * accumulation * config.data.num_clips
    trains = config.meta.finetune_encoder
    flops = counts.forward_flops * (3 if trains else 1) * clips
    recomputed = counts.forward_flops * (counts.depth // every) / counts.depth * clips if on and trains else 0.0
    sim = predict(Simulation(hw, {}, traffic, flops, recomputed))
    return Candidate(layout, micro_batch, accumulation, checkpointing, memory, sim)


def per_gpu_batch(config: Config, world: int, global_batch: int | None) -> int:
    """Clips per GPU per optimizer step; the global batch must split evenly over the ranks."""
    if global_batch is None:
        return config.data.batch_size * config.optimization.accumulation_steps
    if global_batch % world:
        raise UserError(f"--global-batch {global_batch} does not split over {world} GPUs; use a multiple of {world}")
    return global_batch // world


def candidates(
    config: Config,
    counts: ModelCounts,
    hw: Hardware,
    gpu_memory_gib: float,
    margin: float,
    global_batch: int | None = None,
) -> tuple[list[Candidate], int]:
    """Every candidate that fits, fastest first, and how many were tried."""
    batch = per_gpu_batch(config, hw.world, global_batch)
    # a frozen encoder keeps no activations to checkpoint
    choices = list(CHECKPOINTING) if config.meta.finetune_encoder else ["off"]
    tried = [predicted(config, counts, hw, layout, micro, batch // micro, checkpointing)
             for layout in layouts(hw.world, hw.gpus_per_node)
             for micro in range(1, batch + 1) if batch % micro == 0
             for checkpointing in choices]  # fmt: skip
    limit = (1 - margin) * gpu_memory_gib * GIB
    return ranked([c for c in tried if c.memory <= limit]), len(tried)


def ranked(found: list[Candidate]) -> list[Candidate]:
    """``found`` best first: by the step time to 3 digits, a quantized layout's taken as
    :data:`QUANTIZED_HANDICAP` slower (it changes the numbers the step computes: first only when
    clearly faster); then fewer micro-steps, the layouts' order (torch before DeepSpeed), less memory."""
    if not found:
        return []
    hardware = found[0].sim.hardware
    order = [layout.name for layout in layouts(hardware.world, hardware.gpus_per_node)]

    def rank(c: Candidate) -> tuple:
        step = c.sim.step_s * (QUANTIZED_HANDICAP if c.layout.quantized else 1.0)
        return float(f"{step:.3g}"), c.accumulation, order.index(c.layout.name), c.memory

    return sorted(found, key=rank)


def as_configured(config: Config, counts: ModelCounts, hw: Hardware) -> Candidate:
    """The config's own layout, predicted the same way (what the suggestions are measured against)."""
    layout = configured_layout(config.distributed, hw.world, hw.gpus_per_node)
    model = config.model
    every = model.activation_checkpointing_every
    checkpointing = "off" if not model.use_activation_checkpointing else ("every block" if every == 1 else
                                                                           "every other block")  # fmt: skip
    return predicted(config, counts, hw, layout, config.data.batch_size, config.optimization.accumulation_steps,
                     checkpointing)  # fmt: skip


def simulated(config: Config, candidate: Candidate, num_classes: int) -> Candidate:
    """``candidate`` run through the simulator: its memory and collectives as the real code has them."""
    from harness.config.loading import _deep_update, config_from_dict, parse_overrides, to_dict
    from harness.plan.simulate import simulate

    tried = config_from_dict(_deep_update(to_dict(config), parse_overrides(candidate.overrides())))
    sim = simulate(tried, candidate.sim.hardware, num_classes)
    return dataclasses.replace(candidate, memory=float(sum(sim.memory.values())), sim=sim, by="simulated")


def table(found: list[Candidate], baseline: Candidate | None = None) -> str:
    """The candidates as a table, each followed by its overrides."""
    head = (f"{'layout':18} {'micro x acc':>11} {'checkpointing':17} {'GiB/GPU':>8} {'compute':>8} {'intra':>7} "
            f"{'inter':>7} {'step ms':>8} {'MFU':>5}  by")  # fmt: skip
    lines = [head]

    def ms(seconds: float, width: int) -> str:
        return f"{seconds * 1e3:{width}.{0 if seconds >= 0.01 else 2}f}"

    def row(c: Candidate, label: str = "") -> str:
        sim = c.sim
        return (f"{label or c.layout.name:18} {f'{c.micro_batch} x {c.accumulation}':>11} {c.checkpointing:17} "
                f"{c.memory / GIB:8.2f} {ms(sim.compute_s, 8)} {ms(sim.intra_s, 7)} {ms(sim.inter_s, 7)} "
                f"{ms(sim.step_s, 8)} {sim.mfu:5.0%}  {c.by}")  # fmt: skip

    if baseline is not None:
        lines.append(row(baseline, f"(as configured: {baseline.layout.name})"))
    for rank, candidate in enumerate(found, 1):
        lines.append(row(candidate))
        lines.append(f"   {rank}. " + " ".join(candidate.overrides()))
    return "\n".join(lines)


#: the clusters a shipped config's comment names: (nodes of 8 H100s, 80 GiB, 3600/400 Gbit/s)
COMMENT_NODES = (1, 8, 128)
COMMENT_START = "# --- harness.plan --suggest (regenerate: python scripts/suggest_comments.py) ---"
COMMENT_END = "# ---"


def config_comment(config: Config, counts: ModelCounts) -> list[str]:
    """The comment a shipped config carries: what ``--suggest`` picks for 8, 64 and 1024 H100s
    (the formulas; the config's own global batch at each scale)."""
    lines = [
        COMMENT_START,
        "# H100 80 GiB, 8 a node, 3600/400 Gbit/s per GPU; the same per-GPU batch, so the same global batch as",
        "# the config gives at that scale. Paste a line's overrides after --config.",
    ]
    for nodes in COMMENT_NODES:
        hardware = Hardware("h100", 8, nodes)
        found, _ = candidates(config, counts, hardware, 80.0, 0.1)
        best, mine = found[0], as_configured(config, counts, hardware)
        lines.append(f"# {hardware.world} GPUs: {best.layout.name}, checkpointing {best.checkpointing}: MFU "
                     f"{best.sim.mfu:.0%} (as configured, {mine.layout.name}: {mine.sim.mfu:.0%})")  # fmt: skip
        lines.append("#   " + " ".join(best.overrides()))
    return [*lines, COMMENT_END]
