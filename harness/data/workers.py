"""DataLoader workers that never outlive the process that started them.

A trainer killed with ``kill -9`` cannot stop its workers, and a forked worker that lives on keeps
decoding, holds memory and GPU-pinned pages, and shares the run folder's lock file. Each worker
asks the kernel to kill it when its parent dies (Linux ``PR_SET_PDEATHSIG``); elsewhere a daemon
thread polls the parent's PID.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_parent(worker_id: int = 0) -> None:
    """``worker_init_fn`` of every loader: end this worker when the process that started it ends."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
                if os.getppid() != parent:  # the parent died before the request took effect
                    os._exit(1)
                return
        except (OSError, AttributeError):
            pass
    threading.Thread(target=_watch, args=(parent,), daemon=True, name="parent-watch").start()


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)
