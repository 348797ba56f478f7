"""``python -m harness.plan --config CFG --gpus 8 --nodes 2``: the memory plan per strategy
(:mod:`harness.plan.memory`, whose formulas ``--help`` prints) and, with ``--simulate``, the
simulated step (:mod:`harness.plan.simulate`)."""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Callable

from harness.config import argument_parser, config_from_args
from harness.config.arguments import log_config_notes
from harness.core.crop import crop_text
from harness.core.errors import UserError, entry_point
from harness.parallel.registry import SIMULATED_STRATEGY
from harness.plan import memory
from harness.plan.memory import GIB, count_parameters, plan


def ranged(kind: type, low: float, high: float | None = None, low_inclusive: bool = True) -> Callable[[str], float]:
    """An argparse ``type`` reading a ``kind`` (int or float) in ``[low, high]`` (``(low, high]``
    without ``low_inclusive``); anything else is argparse's one-line error naming the option."""
    bound = f"{'>=' if low_inclusive else '>'} {low:g}" + (f" and <= {high:g}" if high is not None else "")
    wanted = f"{'an integer' if kind is int else 'a number'} {bound}"

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}") from None
        inside = (value >= low if low_inclusive else value > low) and (high is None or value <= high)
        if not math.isfinite(value) or not inside:
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


COUNT = ranged(int, 1)  #: GPUs, nodes, classes
POSITIVE = ranged(float, 0, low_inclusive=False)  #: memory, bandwidth
FRACTION = ranged(float, 0, 1, low_inclusive=False)  #: efficiency: a share of the peak


def shard_group(config, gpus_per_node: int, ranks: int) -> int:
    """The ranks the ``hsdp`` row shards over: ``distributed.fsdp.shard_group_size`` as a run
    reads it (a size the world does not split into is its one-line error), else a node's GPUs."""
    from harness.parallel.fsdp import hybrid_mesh_shape

    shape = hybrid_mesh_shape(config.distributed.fsdp.shard_group_size, ranks, gpus_per_node)
    return shape[1] if shape else gpus_per_node


@entry_point
def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    parser = argument_parser("harness-plan", memory.__doc__)
    parser.add_argument("--gpus", type=COUNT, default=8, help="GPUs per node")
    parser.add_argument("--nodes", type=COUNT, default=1)
    parser.add_argument("--gpu-memory", type=POSITIVE, default=80.0, help="GiB per GPU (H100: 80)")
    parser.add_argument(
        "--num-classes",
        type=COUNT,
        default=None,
        help="default: meta.num_classes, the sum of meta.label_sets' sizes, or 400",
    )
    parser.add_argument(
        "--simulate",
        action="store_true",
        help="also run one training step of the real model under a fake process group of this many ranks",
    )
    parser.add_argument("--gpu", default="h100", help="for --simulate: h100, h200, gh200, b200, a100, l40s...")
    parser.add_argument(
        "--intra-node-gbps",
        type=POSITIVE,
        default=3600.0,
        help="for --simulate: Gbit/s per GPU inside a node (NVLink 4: 3600)",
    )
    parser.add_argument(
        "--inter-node-gbps", type=POSITIVE, default=400.0, help="for --simulate: Gbit/s per GPU between nodes"
    )
    parser.add_argument(
        "--compute-efficiency",
        type=FRACTION,
        default=0.45,
        help="for --simulate: fraction (0 < f <= 1) of the GPU's bf16 peak the matmuls reach",
    )
    parser.add_argument(
        "--suggest",
        action="store_true",
        help="search micro-batch x accumulation, activation checkpointing and layout for this cluster and print the "
        "best few with their overrides (with --simulate: the best FSDP/HSDP ones simulated)",
    )
    parser.add_argument(
        "--global-batch",
        type=COUNT,
        default=None,
        help="for --suggest: clips per optimizer step (default: the config's per-GPU batch x GPUs)",
    )
    parser.add_argument("--top", type=COUNT, default=5, help="for --suggest: how many to print")
    parser.add_argument(
        "--margin",
        type=ranged(float, 0, 1, low_inclusive=True),
        default=0.1,
        help="for --suggest: share of the GPU's memory left free (framework, fragmentation)",
    )
    args = parser.parse_args(argv)
    config = config_from_args(args)
    log_config_notes(config, logging.getLogger("harness.plan"))  # deprecated keys: a warning line
    ranks = args.gpus * args.nodes
    # label sets given with their sizes ({verb: 97, noun: 300}): the classifier outputs them all
    sets = config.meta.label_sets if isinstance(config.meta.label_sets, dict) else {}
    sizes = [int(size or 0) for size in sets.values()]
    summed = sum(sizes) if sizes and all(sizes) else 0  # (a 0 is inferred from the data: unknown here)
    classes = args.num_classes or config.meta.num_classes or summed or 400
    counts = count_parameters(config, classes)
    group = shard_group(config, args.gpus, ranks)
    rows = plan(config, ranks, classes, counts, group)
    print(f"{config.model.model_name}: {counts.total / 1e6:.0f}M parameters ({counts.trainable / 1e6:.0f}M trained), "
          f"{ranks} GPUs, {config.meta.dtype}, micro-batch {config.data.batch_size} x {config.data.num_clips} clips "
          f"of {max(config.data.dataset_fpcs)}x{crop_text(config.data.crop_size)}px, activation checkpointing "
          f"{'on' if config.model.use_activation_checkpointing else 'off'}")  # fmt: skip
    print(
        f"{'strategy':14} {'weights':>8} {'grads':>8} {'optim':>8} {'gathered':>8} {'activ.':>8} {'total':>8}  GiB/GPU"
    )
    for row in rows:
        values = [row.weights, row.gradients, row.optimizer, row.gathered, row.activations, row.total]
        fits = "fits" if row.total / GIB < 0.9 * args.gpu_memory else "too large"
        print(f"{row.strategy:14} " + " ".join(f"{v / GIB:8.2f}" for v in values) + f"  {fits}")
    apart = ", ".join(row.strategy for row in rows if row.grads_apart)
    if apart:
        print(f"({apart}: gradients and the backward's activations are not held at once; the total counts the larger)")
    print("(plus the framework's workspace, ~1-3 GiB; see `python -m harness.plan --help` for the formulas)")
    if args.simulate or args.suggest:
        from harness.plan.simulate import GPU_PEAKS, Hardware

        if args.gpu not in GPU_PEAKS:
            raise UserError(f"--gpu {args.gpu!r}: choose one of {', '.join(GPU_PEAKS)}")
        hardware = Hardware(args.gpu, args.gpus, args.nodes, args.intra_node_gbps, args.inter_node_gbps,
                            args.compute_efficiency)  # fmt: skip
        if args.suggest:
            print_suggestions(config, counts, hardware, args, classes)
        else:
            print_simulation(config, rows, hardware, args.gpu_memory, classes)
    return 0


def print_simulation(config, rows, hardware, gpu_memory: float, classes: int) -> None:
    """``--simulate``: the config's own layout run through the simulator, beside the planner's row."""
    from harness.plan.simulate import layout_name, report, simulate

    layout = layout_name(config, hardware)
    row = "hsdp" if layout.startswith("hsdp") else SIMULATED_STRATEGY
    planned = next(r for r in rows if r.strategy == row).total
    print(report(simulate(config, hardware, classes), planned, gpu_memory, layout))


def print_suggestions(config, counts, hardware, args, classes: int) -> None:
    """``--suggest``: the candidates that fit, best first (see :mod:`harness.plan.suggest`)."""
    from harness.plan.suggest import as_configured, candidates, fitting, per_gpu_batch, ranked, simulated, table

    found, tried = candidates(config, counts, hardware, args.gpu_memory, args.margin, args.global_batch)
    batch = per_gpu_batch(config, hardware.world, args.global_batch) * hardware.world
    print(f"\nsuggestions for {hardware.world} x {hardware.gpu} ({hardware.nodes} node(s) x {hardware.gpus_per_node}), "
          f"global batch {batch}: {len(found)} of {tried} candidates fit in {args.gpu_memory:g} GiB with "
          f"{args.margin:.0%} left free")  # fmt: skip
    if not found:
        raise UserError(f"nothing fits in {args.gpu_memory:g} GiB per GPU with {args.margin:.0%} free: lower the "
                        "--global-batch, or use more GPUs")  # fmt: skip
    best = found[: args.top]
    if args.simulate:  # the FSDP/HSDP ones through the simulator (DeepSpeed's stay formulas)
        chosen = [c for c in best if c.layout.simulable]
        for index, candidate in enumerate(chosen, 1):  # about a minute each for a ViT-g on 2 cores
            print(f"simulating {index}/{len(chosen)}: {candidate.layout.name}, micro-batch {candidate.micro_batch}, "
                  f"checkpointing {candidate.checkpointing}", file=sys.stderr, flush=True)  # fmt: skip
            best[best.index(candidate)] = simulated(config, candidate, classes)
        kept = fitting(best, args.gpu_memory, args.margin)
        for dropped in (c for c in best if c not in kept):
            print(f"{dropped.layout.name}, micro-batch {dropped.micro_batch}: simulated {dropped.memory / GIB:.2f} GiB "
                  f"does not fit with {args.margin:.0%} free; left out", file=sys.stderr)  # fmt: skip
        best = ranked(kept)
    mine = as_configured(config, counts, hardware, args.global_batch)
    if mine is None:
        print("(the config's own layout, ZeRO-1/2 or host offload, is not one --suggest times)")
    print(table(best, mine))


if __name__ == "__main__":
    sys.exit(main())
