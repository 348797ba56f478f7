"""What a long run needs watching: FLOPs utilisation, memory, data stalls.

Peak FLOP/s come from a table of known accelerators (dense, no sparsity) or, on a CPU, from a
short matmul measured at start-up.
"""

from __future__ import annotations

import logging
import os
import time

import torch
from torch import nn

from harness.config import Config
from harness.core.crop import crop_hw
from harness.models.flops import clip_tokens

log = logging.getLogger(__name__)

# Dense peak TFLOP/s per GPU by name fragment: (bf16/fp16 tensor cores, fp32 with TF32 off).
GPU_PEAK_TFLOPS = {
    "H200": (989.0, 67.0),
    "H100 PCIe": (756.0, 51.0),
    "H100": (989.0, 67.0),
    "GH200": (989.0, 67.0),
    "B200": (2250.0, 80.0),
    "A100": (312.0, 19.5),
    "L40S": (362.0, 91.6),
    "L4": (121.0, 30.3),
    "A10": (125.0, 31.2),
    "V100": (125.0, 15.7),
    "4090": (165.2, 82.6),
}


def peak_flops(device: torch.device, dtype: torch.dtype) -> float:
    """Peak FLOP/s of ``device`` in ``dtype`` (table for GPUs, measured for CPUs; 0 if unknown)."""
    low = dtype in (torch.bfloat16, torch.float16)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for fragment, (tensor, fp32) in GPU_PEAK_TFLOPS.items():
            if fragment in name:
                return 1e12 * (tensor if low else fp32)
        log.info("no FLOPs peak known for %s: MFU is not reported", name)
        return 0.0
    key = (str(device), dtype)
    if key not in _MEASURED:
        _MEASURED[key] = measured_cpu_peak(dtype)
    return _MEASURED[key]


_MEASURED: dict[tuple[str, torch.dtype], float] = {}  # a CPU's peak per dtype, measured once per process


def measured_cpu_peak(dtype: torch.dtype, budget_seconds: float = 0.4, largest: int = 1024) -> float:
    """FLOP/s of the best of several square matmuls in ``dtype`` on this CPU, within about
    ``budget_seconds``: the size doubles from 256 to ``largest`` while one product takes under 20 ms
    (one small matmul under load understated the peak and MFU read above 100%, which
    :func:`checked_mfu` refuses), then the product repeats (up to 10 times) within the budget. A CPU
    without native bf16/fp16 kernels emulates them about 10x slower: a fixed 1024-size measurement
    took 26 s there, at every run's start."""
    generator = torch.Generator().manual_seed(0)  # never the global stream: training draws from it
    size, started = 256, time.perf_counter()
    while True:
        a = torch.randn(size, size, generator=generator).to(dtype)
        b = torch.randn(size, size, generator=generator).to(dtype)
        start = time.perf_counter()
        a @ b
        once = time.perf_counter() - start
        if once >= 0.02 or size >= largest:
            break
        size *= 2
    best = once
    for _ in range(10):
        if time.perf_counter() - started > budget_seconds:
            break
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


_WARNED_MFU = []


def checked_mfu(flops_per_second: float, peak: float | None) -> float | None:
    """``flops_per_second / peak``, or None (and one warning) when there is no peak or the ratio
    is impossible (above 1: the measured peak was too low, e.g. measured while the machine was busy)."""
    if not peak:
        return None
    mfu = flops_per_second / peak
    if mfu > 1.0:
        if not _WARNED_MFU:
            _WARNED_MFU.append(True)
            log.warning("MFU would read %.0f%%: the FLOPs peak measured for this CPU is too low; MFU is left "
                        "out of the logs", 100 * mfu)  # fmt: skip
        return None
    return mfu


def flops_per_clip(encoder: nn.Module, config: Config, finetune: bool) -> int:
    """Training FLOPs of one clip through ``encoder`` (its family's ``forward_flops``): 3x forward
    when it trains, 1x when frozen."""
    data = config.data
    forward = encoder.forward_flops(max(data.dataset_fpcs), *crop_hw(data.crop_size))
    return forward * (3 if finetune else 1)


def tokens_per_clip(config: Config) -> int:
    """Encoder tokens of one clip."""
    data = config.data
    return clip_tokens(max(data.dataset_fpcs), data.crop_size, data.patch_size, data.tubelet_size)


def memory_gb(device: torch.device) -> float:
    """Peak GPU memory allocated since the last call (GB), or the process's host RSS on a CPU."""
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        return peak / 1e9
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e9
    except OSError:
        return 0.0


class StallDetector:
    """Warns (once per epoch) when data waiting exceeds ``threshold`` of the step time in
    ``patience`` log windows in a row."""

    def __init__(self, threshold: float, num_workers: int, patience: int = 3) -> None:
        self.threshold, self.num_workers, self.patience = threshold, num_workers, patience
        self.streak, self.warned_epoch = 0, -1

    def update(self, wait_fraction: float, epoch: int) -> bool:
        """Record one window; returns True when it warned."""
        self.streak = self.streak + 1 if wait_fraction > self.threshold else 0
        if self.streak >= self.patience and self.warned_epoch != epoch:
            self.warned_epoch = epoch
            log.warning(
                "data stall: %.0f%% of the step time waits for data (data.num_workers=%d); more workers, "
                "faster storage or shards (data.shards) would help",
                100 * wait_fraction,
                self.num_workers,
            )
            return True
        return False
