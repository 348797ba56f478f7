"""DataLoader workers that never outlive the process that started them, nor fail unheard.

A trainer killed with ``kill -9`` cannot stop its workers, and a forked worker that lives on keeps
decoding, holds memory and GPU-pinned pages, and shares the run folder's lock file. Each worker
asks the kernel to kill it when its parent dies (Linux ``PR_SET_PDEATHSIG``); elsewhere a daemon
thread polls the parent's PID.

A worker hands each batch over from a background thread of its result queue, which pickles it
there; under torch's default ``file_descriptor`` sharing strategy every tensor needs a new
descriptor at that point. When that fails (``Too many open files``), multiprocessing prints the
traceback and drops the batch, and the trainer waits for it forever. Our workers exit instead, so
the DataLoader raises in the trainer ("worker ... exited unexpectedly") within seconds.
"""

from __future__ import annotations

import ctypes
import multiprocessing.queues
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_parent(worker_id: int = 0) -> None:
    """``worker_init_fn`` of every loader: end this worker when the process that started it ends,
    or when it cannot hand a batch over (see the module docs)."""
    # Only this (forked) worker's class: its result queue starts its feeder thread after this.
    multiprocessing.queues.Queue._on_queue_feeder_error = staticmethod(_exit_on_send_error)
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


def _exit_on_send_error(error: BaseException, item: object) -> None:
    """A batch this worker could not hand over: say why on stderr and end the worker."""
    print(f"error: a DataLoader worker (pid {os.getpid()}) could not hand a batch to the trainer: {error!r}; "
          "with 'Too many open files', raise the open-file limit (ulimit -n) or use fewer workers", file=sys.stderr,
          flush=True)  # fmt: skip
    os._exit(1)
