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


@entry_point
def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    parser = argument_parser("harness-plan", memory.__doc__)
    parser.add_argument("--gpus", type=COUNT, default=8, help="GPUs per node")
    parser.add_argument("--nodes", type=COUNT, default=1)
    parser.add_argument("--gpu-memory", type=POSITIVE, default=80.0, help="GiB per GPU (H100: 80)")
    parser.add_argument("--num-classes", type=COUNT, default=None, help="default: meta.num_classes or 400")
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
    args = parser.parse_args(argv)
    config = config_from_args(args)
    log_config_notes(config, logging.getLogger("harness.plan"))  # deprecated keys: a warning line
    ranks = args.gpus * args.nodes
    classes = args.num_classes or config.meta.num_classes or 400
    counts = count_parameters(config, classes)
    rows = plan(config, ranks, classes, counts)
    print(f"{config.model.model_name}: {counts.total / 1e6:.0f}M parameters ({counts.trainable / 1e6:.0f}M trained), "
          f"{ranks} GPUs, {config.meta.dtype}, micro-batch {config.data.batch_size} x {config.data.num_clips} clips "
          f"of {max(config.data.dataset_fpcs)}x{config.data.crop_size}px, activation checkpointing "
          f"{'on' if config.model.use_activation_checkpointing else 'off'}")  # fmt: skip
    print(
        f"{'strategy':14} {'weights':>8} {'grads':>8} {'optim':>8} {'gathered':>8} {'activ.':>8} {'total':>8}  GiB/GPU"
    )
    for row in rows:
        values = [row.weights, row.gradients, row.optimizer, row.gathered, row.activations, row.total]
        fits = "fits" if row.total / GIB < 0.9 * args.gpu_memory else "too large"
        print(f"{row.strategy:14} " + " ".join(f"{v / GIB:8.2f}" for v in values) + f"  {fits}")
    print("(plus the framework's workspace, ~1-3 GiB; see `python -m harness.plan --help` for the formulas)")
    if args.simulate:
        from harness.plan.simulate import GPU_PEAKS, Hardware, report, simulate

        if args.gpu not in GPU_PEAKS:
            raise UserError(f"--gpu {args.gpu!r}: choose one of {', '.join(GPU_PEAKS)}")
        hardware = Hardware(args.gpu, args.gpus, args.nodes, args.intra_node_gbps, args.inter_node_gbps,
                            args.compute_efficiency)  # fmt: skip
        simulated = next(row for row in rows if row.strategy == SIMULATED_STRATEGY)
        planned = {"weights": simulated.weights, "gradients": simulated.gradients, "optimizer": simulated.optimizer,
                   "gathered": simulated.gathered, "activations": simulated.activations}  # fmt: skip
        print(report(simulate(config, hardware, classes), planned, args.gpu_memory))
    return 0


if __name__ == "__main__":
    sys.exit(main())
