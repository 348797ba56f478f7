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
from harness.config.loading import ConfigError
from harness.core.errors import UserError
from harness.parallel.layouts import Layout, collectives, configured_layout, layouts
from harness.plan.memory import GIB, ModelCounts, row_plan, value_bytes
from harness.plan.simulate import Hardware, Simulation, predict, training_flops

QUANTIZED_HANDICAP = 1.05  #: ranked as if this much slower (see :func:`ranked`)
TIE = 1.01  #: step times within 1% rank as equal (then the simpler candidate first)
#: activation checkpointing tried: every k-th block (0: off)
CHECKPOINTING = (0, 1, 2)


def checkpointing_name(every: int) -> str:
    """``off``, ``every block``, ``every other block``, ``every 4th block``..."""
    names = {0: "off", 1: "every block", 2: "every other block", 3: "every 3rd block"}
    return names.get(every, f"every {every}th block")


@dataclass(frozen=True)
class Candidate:
    """One predicted way to run the config."""

    layout: Layout
    micro_batch: int
    accumulation: int
    every: int  #: activation checkpointing of every k-th block (0: off)
    memory: float  #: bytes per GPU
    sim: Simulation  #: the predicted step (its collectives, compute and times)
    by: str = "formulas"  #: or ``simulated``

    @property
    def checkpointing(self) -> str:
        return checkpointing_name(self.every)

    def overrides(self) -> list[str]:
        """The config overrides that run this candidate."""
        return [*self.layout.overrides, f"data.batch_size={self.micro_batch}",
                f"optimization.accumulation_steps={self.accumulation}",
                f"model.use_activation_checkpointing={str(bool(self.every)).lower()}",
                *([f"model.activation_checkpointing_every={self.every}"] if self.every else [])]  # fmt: skip


def tried_config(config: Config, micro_batch: int, accumulation: int, every: int) -> Config | None:
    """``config`` with this micro-batch, accumulation and checkpointing, validated (None: the
    config's other keys refuse it, e.g. ``data.encoder_batch_size``)."""
    from harness.config.rules import validate

    model = dataclasses.replace(config.model, use_activation_checkpointing=bool(every),
                                activation_checkpointing_every=every or 1)  # fmt: skip
    tried = dataclasses.replace(
        config,
        data=dataclasses.replace(config.data, batch_size=micro_batch),
        model=model,
        optimization=dataclasses.replace(config.optimization, accumulation_steps=accumulation),
    )
    try:
        return validate(tried)
    except ConfigError:
        return None


def predicted(
    config: Config, counts: ModelCounts, hw: Hardware, layout: Layout, micro_batch: int, accumulation: int, every: int
) -> Candidate | None:
    """One candidate predicted by the formulas (None: not a valid config)."""
    tried = tried_config(config, micro_batch, accumulation, every)
    if tried is None:
        return None
    memory = row_plan(layout.row, tried, counts, hw.world, layout.group).total
    low, reduce = value_bytes(config.meta.dtype), value_bytes(config.distributed.fsdp.reduce_dtype)
    traffic = collectives(layout, counts, hw, low, reduce, accumulation)
    clips = micro_batch * accumulation * config.data.num_clips
    flops, recomputed = training_flops(counts.forward_flops, counts.depth, tried)
    sim = predict(Simulation(hw, {}, traffic, flops * clips, recomputed * clips, accumulation=accumulation))
    return Candidate(layout, micro_batch, accumulation, every, memory, sim)


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
    """Every candidate that fits, best first (:func:`ranked`), and how many were tried."""
    batch = per_gpu_batch(config, hw.world, global_batch)
    # a frozen encoder keeps no activations to checkpoint
    choices = CHECKPOINTING if config.meta.finetune_encoder else (0,)
    tried = [predicted(config, counts, hw, layout, micro, batch // micro, every)
             for layout in layouts(hw.world, hw.gpus_per_node)
             for micro in range(1, batch + 1) if batch % micro == 0
             for every in choices]  # fmt: skip
    valid = [c for c in tried if c is not None]
    return ranked(fitting(valid, gpu_memory_gib, margin)), len(valid)


def fitting(found: list[Candidate], gpu_memory_gib: float, margin: float) -> list[Candidate]:
    """The candidates whose memory leaves ``margin`` of the GPU free."""
    return [c for c in found if c.memory <= (1 - margin) * gpu_memory_gib * GIB]


def ranked(found: list[Candidate]) -> list[Candidate]:
    """``found`` best first: by step time, times within :data:`TIE` of each other counted equal
    (a quantized layout's taken as :data:`QUANTIZED_HANDICAP` slower: it changes the numbers the
    step computes, so it comes first only when clearly faster); among equals the simpler first:
    fewer micro-steps, the layouts' order (DDP, FSDP, HSDP with a node's group first, DeepSpeed),
    less checkpointing; then the step time itself."""
    if not found:
        return []
    hardware = found[0].sim.hardware
    order = [layout.name for layout in layouts(hardware.world, hardware.gpus_per_node)]

    def effective(c: Candidate) -> float:
        return c.sim.step_s * (QUANTIZED_HANDICAP if c.layout.quantized else 1.0)

    def name_order(c: Candidate) -> int:
        return order.index(c.layout.name) if c.layout.name in order else len(order)

    def rank(c: Candidate) -> tuple:
        return c.accumulation, name_order(c), 1.0 / c.every if c.every else 0.0, effective(c)

    remaining, out = sorted(found, key=effective), []
    while remaining:  # the fastest left and everything within TIE of it, the simplest first
        bound = effective(remaining[0]) * TIE
        tied = [c for c in remaining if effective(c) <= bound]
        out += sorted(tied, key=rank)
        remaining = [c for c in remaining if effective(c) > bound]
    return out


def as_configured(
    config: Config, counts: ModelCounts, hw: Hardware, global_batch: int | None = None
) -> Candidate | None:
    """The config's own layout and checkpointing, at the same per-GPU batch as the candidates
    (its micro-batch kept where it divides it), predicted the same way; None when ``--suggest``
    does not time that layout (ZeRO-1/2, host offload)."""
    layout = configured_layout(config.distributed, hw.world, hw.gpus_per_node)
    if layout is None:
        return None
    batch = per_gpu_batch(config, hw.world, global_batch)
    micro = config.data.batch_size if batch % config.data.batch_size == 0 else batch
    model = config.model
    every = model.activation_checkpointing_every if model.use_activation_checkpointing else 0
    return predicted(config, counts, hw, layout, micro, batch // micro, every)


def simulated(config: Config, candidate: Candidate, num_classes: int) -> Candidate:
    """``candidate`` run through the simulator: its memory and collectives as the real code has them."""
    from harness.config.loading import apply_overrides
    from harness.plan.simulate import simulate

    sim = simulate(apply_overrides(config, candidate.overrides()), candidate.sim.hardware, num_classes)
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
        lines += [row(baseline), "   0. as configured (the config's own layout and checkpointing)"]
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
        before = f" (as configured, {mine.layout.name}: {mine.sim.mfu:.0%})" if mine else ""
        lines.append(f"# {hardware.world} GPUs: {best.layout.name}, checkpointing {best.checkpointing}: MFU "
                     f"{best.sim.mfu:.0%}{before}")  # fmt: skip
        lines.append("#   " + " ".join(best.overrides()))
    return [*lines, COMMENT_END]
