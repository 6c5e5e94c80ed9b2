"""Process pools whose workers leave Ctrl-C to their parent (F4's cluster workers, a sweep's cell workers).

A terminal's Ctrl-C sends SIGINT to every process of the foreground group, worker processes included. A worker
that raised KeyboardInterrupt would print a traceback; so the parent alone handles it (it stops the pool) and the
workers ignore it. SIGINT is held back while the pool starts: a worker is born with it blocked and
:func:`ignore_sigint`, its initializer's first step, drops one that came meanwhile; in the parent a Ctrl-C meanwhile
is raised once the pool is whole, so that no half-started worker is left behind (one spawned but not yet sent its
work would report that its parent has gone). A caller that spawns its workers starts multiprocessing's resource
tracker first (``multiprocessing.resource_tracker.ensure_running()``): starting the tracker unblocks SIGINT.
"""

from __future__ import annotations

import multiprocessing.pool
import signal
import threading
from typing import Callable


def ignore_sigint() -> None:
    """Ignore SIGINT from now on, and unblock it (in a worker that :func:`start_pool` started)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def start_pool(context, workers: int, initializer: Callable, initargs: tuple = ()) -> multiprocessing.pool.Pool:
    """``context.Pool(workers, initializer, initargs)`` (the initializer calls :func:`ignore_sigint` first) started
    with SIGINT held back; a Ctrl-C meanwhile is handled once it has started, and terminates it when its handler
    raises (KeyboardInterrupt)."""
    handler = signal.getsignal(signal.SIGINT)
    defers = threading.current_thread() is threading.main_thread() and callable(handler)
    came = []
    if defers:
        signal.signal(signal.SIGINT, lambda signum, frame: came.append(frame))
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})  # the workers inherit the mask
    try:
        pool = context.Pool(workers, initializer=initializer, initargs=initargs)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
        if defers:
            signal.signal(signal.SIGINT, handler)
    if came:
        try:
            handler(signal.SIGINT, came[0])
        except BaseException:
            pool.terminate()
            raise
    return pool
