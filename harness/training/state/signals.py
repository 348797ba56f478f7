"""Stop requests from the outside world: SIGTERM (preemption, scancel, torchrun shutting down)
and SIGUSR1 (SLURM's warning before the time limit, ``#SBATCH --signal=USR1@120``).

The handler only records the signal; the loop checks at step boundaries, all ranks agree (one
tiny all-reduce), the trainer saves ``latest`` and returns, and the process exits cleanly. Who
requeues is the launcher's business (``slurm/train.sbatch`` does it).
"""

from __future__ import annotations

import logging
import signal
import threading

import torch

log = logging.getLogger(__name__)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class StopRequest:
    """Records the first stop signal; :meth:`agreed` tells every rank whether any rank got one."""

    def __init__(self, enabled: bool = True) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}
        if enabled and threading.current_thread() is threading.main_thread():
            for number in STOP_SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)

    def _handle(self, number: int, frame) -> None:
        if self.received is None:
            self.received = number
            log.warning("received %s: saving a checkpoint at the end of this step, then stopping",
                        signal.Signals(number).name)  # fmt: skip

    def agreed(self, strategy) -> str | None:
        """The signal's name when any rank received one (a collective when distributed)."""
        flag = torch.tensor([self.received or 0], dtype=torch.int64, device=strategy.device)
        if strategy.world_size > 1:
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        number = int(flag.item())
        return signal.Signals(number).name if number else None

    def restore(self) -> None:
        """Put the previous handlers back."""
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()
