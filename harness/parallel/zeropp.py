"""DeepSpeed ZeRO++: ZeRO-3's options that cut the traffic between nodes, checked against the launch.

- hpZ (``zero_optimization.zero_hpz_partition_size``): after the forward, each rank keeps a second
  partition of the weights, 1/N of them for a group of N ranks (a node), so the backward's
  all-gathers stay inside the node. ``"auto"`` is the launcher's processes per node.
- qwZ / qgZ (``zero_quantized_weights`` / ``zero_quantized_gradients``): int8 weights in the
  forward all-gather, int4 gradients in a two-level all-to-all instead of the reduce-scatter.
  Both run DeepSpeed's CUDA quantizer kernels (its ``QuantizerBuilder``); its CPU accelerator has
  none, so a run without them is refused before anything starts (one line).
- MiCS (``mics_shard_size``): removed from DeepSpeed (0.19.8's config raises); refused with a
  pointer to hpZ and to FSDP2's hybrid sharding, which is MiCS's layout.

The harness changes nothing else: DeepSpeed builds the groups (consecutive ranks) itself, except
that the meta-device build needs them made once for all its blocks (:func:`secondary_group`).
"""

from __future__ import annotations

from typing import Any

HPZ_KEY = "zero_hpz_partition_size"
#: the options that need DeepSpeed's CUDA quantizer (qwZ, qgZ, and qwZ's frozen-weights variant)
QUANTIZED_KEYS = ("zero_quantized_weights", "zero_quantized_gradients", "zero_quantized_nontrainable_weights")
MICS_KEYS = ("mics_shard_size", "mics_hierarchical_params_gather")


def fill_zeropp(
    config: dict[str, Any], source: str, world_size: int, local_world_size: int | None, error: type[Exception]
) -> None:
    """Check the ZeRO++ keys of ``config`` (in place) and fill ``zero_hpz_partition_size``: ``"auto"``
    is ``local_world_size``; a group of all ranks (one node) becomes 1, hpZ off, since its second
    partition would be ZeRO-3's own over again. Raises ``error`` (one line naming the key)."""
    zero = config.get("zero_optimization", {})
    for key in MICS_KEYS:
        if key in zero:
            raise error(
                f"{source}: zero_optimization.{key}: DeepSpeed removed MiCS (0.19.8 has none); {HPZ_KEY} (hpZ, "
                "ds_configs/zero3_hpz.json) keeps the backward's gathers inside a node, and distributed.strategy=fsdp "
                "with distributed.fsdp.shard_group_size=auto is MiCS's layout (shard in a node, replicate across)"
            )
    used = [HPZ_KEY] if zero.get(HPZ_KEY) not in (None, 0, 1) else []  # 0 and 1: DeepSpeed's "off"
    used += quantized_options(config)
    stage = zero.get("stage", 0)
    if used and stage != 3:
        raise error(f"{source}: zero_optimization.{used[0]} is ZeRO++, which only ZeRO-3 has; "
                    f"zero_optimization.stage={stage} would ignore it: use stage 3 or remove the key")  # fmt: skip
    if HPZ_KEY in zero:
        zero[HPZ_KEY] = hpz_partition_size(zero[HPZ_KEY], f"{source}: zero_optimization.{HPZ_KEY}",
                                           world_size, local_world_size, error)  # fmt: skip


def hpz_partition_size(
    given: Any, key: str, world_size: int, local_world_size: int | None, error: type[Exception]
) -> int:
    """The hpZ group size DeepSpeed gets for ``given`` (``"auto"``, or a number of ranks; 0 and 1
    are DeepSpeed's "off"); ``key`` names it in the one-line ``error``."""
    key = f"{key}={given!r}"
    if given == "auto":
        if local_world_size is None:
            raise error(f"{key}: the launcher did not say how many processes run per node (LOCAL_WORLD_SIZE); "
                        "give the group size as a number")  # fmt: skip
        size = local_world_size
    elif isinstance(given, int) and not isinstance(given, bool) and given >= 0:
        size = given
    else:
        raise error(f"{key} is neither auto (the processes per node) nor a number of ranks")
    if size > 1 and world_size % size:
        raise error(f"{key}: {world_size} ranks do not split into groups of {size}; use a divisor of the world size")
    return size if 1 < size < world_size else 1  # 1: off, as DeepSpeed reads 0 and 1


def quantized_options(config: dict[str, Any]) -> list[str]:
    """The quantized ZeRO++ options ``config`` turns on."""
    zero = config.get("zero_optimization", {})
    return [key for key in QUANTIZED_KEYS if zero.get(key)]


def quantizer_available() -> bool:
    """Whether DeepSpeed's accelerator has the quantizer kernels qwZ and qgZ run (CUDA's, built on
    first use; the CPU accelerator hands out a builder that raises when loaded)."""
    from deepspeed.accelerator import get_accelerator
    from deepspeed.ops.op_builder.cpu import NotImplementedBuilder

    builder = get_accelerator().create_op_builder("QuantizerBuilder")
    return builder is not None and not isinstance(builder, NotImplementedBuilder)


def secondary_group(size: int):
    """hpZ's process group (this rank's group of ``size`` consecutive ranks), made once.

    Each ``deepspeed.zero.Init`` that is not handed the group makes it anew, and DeepSpeed keeps it
    in a module global that refuses a second one ("already initialized"): the meta-device build
    runs one ``Init`` per block, so it hands them this one. A later engine in the same process
    (a resumed run in a test) finds it there; a ZeRO-3 engine without hpZ would silently inherit
    it (DeepSpeed's optimizer takes the global whatever its config says), so that is refused.
    None when hpZ is off."""
    import torch.distributed as dist
    from deepspeed.utils import groups

    existing = groups._get_zero_param_intra_parallel_group()
    if size <= 1:
        if existing is not None:
            raise RuntimeError("this process holds hpZ groups from an earlier engine, which a ZeRO-3 engine without "
                               "hpZ would inherit: run it in a process of its own")  # fmt: skip
        return None
    if existing is None:
        groups._create_zero_param_parallel_group(size)
    group = groups._get_zero_param_intra_parallel_group()
    if dist.get_world_size(group) != size:  # DeepSpeed keeps one per process
        raise RuntimeError(f"this process already holds hpZ groups of {dist.get_world_size(group)} ranks, not {size}")
    return group
