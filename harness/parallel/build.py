"""Build the strategy a process runs under, from its registered name.

Here, not in :mod:`harness.parallel.strategy`, so that dependencies point one way: this module
uses the registry and the strategy interface; the interface knows neither this module nor the
registry.
"""

from __future__ import annotations

from typing import Any

from harness.core.errors import UserError
from harness.parallel.distributed import init_process_group, process_info
from harness.parallel.precision import Precision
from harness.parallel.registry import STRATEGY_SPECS, resolve_strategy_name
from harness.parallel.strategy import DistributedStrategy, Strategy, resolve_device


def build_strategy(
    name: str,
    device_name: str,
    dtype: str,
    backend: str = "auto",
    options: dict[str, Any] | None = None,
) -> Strategy:
    """The strategy called ``name`` for this process, with its process group joined.

    ``auto`` is ``ddp`` when the launcher started several processes, else ``single``.
    ``options`` are the strategy's own settings (FSDP policies, the DeepSpeed JSON...).
    """
    info = process_info()
    name = resolve_strategy_name(name, info.world_size)
    if name not in STRATEGY_SPECS:
        raise ValueError(f"unknown strategy {name!r}; choose one of auto, {', '.join(STRATEGY_SPECS)}")
    device = resolve_device(device_name, info.local_rank)
    precision = Precision(dtype, device)
    implementation = STRATEGY_SPECS[name].implementation()
    if not issubclass(implementation, DistributedStrategy):
        if info.world_size > 1:
            raise UserError(
                f"distributed.strategy={name} but the launcher started {info.world_size} processes; "
                "use a distributed strategy (or launch one process)"
            )
        return implementation(device, precision, **(options or {}))
    init_process_group(info, backend, device)
    return implementation(device, precision, info.rank, info.world_size, **(options or {}))
