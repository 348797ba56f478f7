"""Process-group setup from the launcher's environment: torchrun, the deepspeed launcher, SLURM.

Reads ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` (torchrun and deepspeed set them) or, under a
bare ``srun``, ``SLURM_PROCID`` / ``SLURM_NTASKS`` / ``SLURM_LOCALID``. A job launched with
several processes never continues as a single one: any failure to join the group is an error.
"""

from __future__ import annotations

import datetime
import os
import socket
import subprocess
from dataclasses import dataclass

import torch
import torch.distributed as dist

from harness.core.errors import UserError


@dataclass(frozen=True)
class ProcessInfo:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    source: str = "single"  #: torchrun (also the deepspeed launcher), slurm or single
    #: processes on this node, as the launcher says (None: it does not say)
    local_world_size: int | None = 1


def process_info(environ: dict[str, str] | None = None) -> ProcessInfo:
    """Rank, world size and local rank from the environment (no side effects)."""
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        # torchrun says LOCAL_WORLD_SIZE, the deepspeed launcher LOCAL_SIZE
        local = env.get("LOCAL_WORLD_SIZE", env.get("LOCAL_SIZE"))
        return ProcessInfo(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", "0")), "torchrun",
                           int(local) if local else None)  # fmt: skip
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:
        local_rank = int(env.get("SLURM_LOCALID", "0"))
        return ProcessInfo(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), local_rank, "slurm",
                           _slurm_tasks_per_node(env))  # fmt: skip
    return ProcessInfo()


def _slurm_tasks_per_node(env: dict[str, str]) -> int | None:
    """Tasks per node of this ``srun`` step: ``SLURM_STEP_TASKS_PER_NODE``, else
    ``SLURM_TASKS_PER_NODE`` (``4(x2)``; ``4(x2),3`` for uneven nodes: then None, no one number),
    else ``SLURM_NTASKS_PER_NODE``.

    Not ``SLURM_NTASKS_PER_NODE`` first: it is the allocation's ``--ntasks-per-node``, inherited
    by every step, so ``srun -n 2`` in a job of 2 nodes x 2 tasks (one task per node, seen on
    SLURM 22.05) still says 2 there, while the step variables say ``1(x2)``."""
    for name in ("SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE"):
        counts = {entry.split("(")[0] for entry in env.get(name, "").split(",") if entry}
        if counts:
            return int(counts.pop()) if len(counts) == 1 else None
    return int(env["SLURM_NTASKS_PER_NODE"]) if env.get("SLURM_NTASKS_PER_NODE") else None


def _slurm_master_address(env: dict[str, str]) -> str:
    """Address of the job's first node (its NodeAddr: emulated node names need not resolve)."""
    nodes = subprocess.run(
        ["scontrol", "show", "hostnames", env["SLURM_JOB_NODELIST"]], capture_output=True, text=True, check=True
    ).stdout.split()
    detail = subprocess.run(["scontrol", "show", "node", nodes[0]], capture_output=True, text=True, check=True).stdout
    for field in detail.split():
        if field.startswith("NodeAddr="):
            return field.split("=", 1)[1]
    return nodes[0]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def init_process_group(info: ProcessInfo, backend: str, device: torch.device, timeout_minutes: float = 30) -> None:
    """Join the job's process group (``backend`` auto: nccl on CUDA, gloo on CPU).

    A single process (e.g. FSDP or DeepSpeed offload on one GPU) gets a one-member group on a free
    local port. Raises when the group cannot be formed; never falls back to one process.
    """
    if dist.is_initialized():
        return
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    env = os.environ
    if info.source == "slurm":
        env.setdefault("MASTER_ADDR", _slurm_master_address(env))
        env.setdefault("MASTER_PORT", str(29500 + int(env.get("SLURM_JOB_ID", "0")) % 20000))
    elif info.world_size == 1:
        env.setdefault("MASTER_ADDR", "127.0.0.1")
        env.setdefault("MASTER_PORT", str(_free_port()))
    missing = [key for key in ("MASTER_ADDR", "MASTER_PORT") if key not in env]
    if missing:
        raise UserError(f"rank {info.rank}/{info.world_size}: {', '.join(missing)} not set; launch with torchrun")
    try:
        dist.init_process_group(
            backend,
            rank=info.rank,
            world_size=info.world_size,
            timeout=datetime.timedelta(minutes=timeout_minutes),
            device_id=device if device.type == "cuda" else None,
        )
    except Exception as error:
        raise UserError(
            f"rank {info.rank} of {info.world_size} could not join the process group at "
            f"{env['MASTER_ADDR']}:{env['MASTER_PORT']} ({backend}): {error}"
        ) from error
