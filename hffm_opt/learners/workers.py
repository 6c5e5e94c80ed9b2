"""Forked worker processes that run the vectorised calls of an edge round on a CPU at once, one per core, each on one
torch thread.

Threads of one process take turns on Python's global interpreter lock between operators, and a vectorised call
dispatches thousands of small operators a step: on a 2-core CPU, two calls at once on two threads trained 1.35 / 1.55 /
1.72x as many samples per second as one thread at 40 / 400 / 1,000 devices, two worker processes 1.63 / 1.80 /
1.88x (``hffm-opt bench --learner`` against ``--threads 1``, ``experiments/learner_speed``). A worker is forked from the
caller when the :class:`ForkedWorkers` is made, so it shares what the caller holds then (the run's packed data and
frozen model) without copying it; what changes from call to call travels through a pipe (pickled: numpy arrays,
not tensors, so no shared-memory handles are left behind); large arrays that both sides read or write every call
belong in :func:`shared_zeros` buffers, made before the fork. A worker ignores Ctrl-C (the caller stops it), ends when
the caller closes it or its pipe, and an error in a call is raised again in the caller, with its type. Linux and
other systems with ``fork``; :func:`fork_available` says whether this process may fork them. Units: none.
"""

from __future__ import annotations

import math
import mmap
import multiprocessing as mp
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch

JOIN_S = 5.0  # seconds a closed worker has to exit before it is killed


def fork_available() -> bool:
    """Whether this process may fork worker processes: the system has ``fork`` (not Windows), and this process is not
    a daemon (a multiprocessing pool's worker, e.g. a sweep's, may have no children)."""
    return "fork" in mp.get_all_start_methods() and not mp.current_process().daemon


def shared_zeros(shape: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A CPU tensor of zeros in anonymous shared memory: processes forked after it is made see each other's writes
    (nothing is copied through a pipe). Freed with the last process that holds it."""
    count = math.prod(shape)
    buffer = mmap.mmap(-1, max(1, count) * torch.empty((), dtype=dtype).element_size())
    return torch.frombuffer(buffer, dtype=dtype, count=max(1, count))[:count].view(*shape)


def _serve(conn, target: Callable[[Any], Any]) -> None:
    """A worker's loop: ``target(item)`` for every item received, ``(True, result)`` or ``(False, error)`` sent back."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
    while True:
        try:
            item = conn.recv()
        except (EOFError, OSError):  # the caller is gone
            return
        if item is None:
            return
        try:
            reply = (True, target(item))
        except BaseException as exc:  # noqa: BLE001 - every error goes back to the caller
            reply = (False, exc)
        try:
            conn.send(reply)
        except Exception as exc:  # noqa: BLE001 - a result or an error that does not pickle
            conn.send((False, RuntimeError(f"a worker's reply could not be sent back ({type(exc).__name__}: {exc}); "
                                           f"it was {type(reply[1]).__name__}: {reply[1]}")))


class ForkedWorkers:
    """``n`` forked processes, each running ``target(item)`` on the items sent to it (see the module docstring).
    ``map(items)`` runs up to ``n`` items at once and returns their results in order; use as a context manager or
    call :meth:`close`."""

    def __init__(self, target: Callable[[Any], Any], n: int):
        if not fork_available():
            raise RuntimeError("this process may not fork worker processes (no 'fork' start method, or a daemon)")
        ctx = mp.get_context("fork")
        for stream in (sys.stdout, sys.stderr):  # a child would flush the caller's buffered output a second time
            stream.flush()
        self._conns, self._procs = [], []
        self._busy = False  # a map is in flight (e.g. abandoned by Ctrl-C): close kills at once
        try:
            for _ in range(n):
                mine, theirs = ctx.Pipe()
                proc = ctx.Process(target=_serve, args=(theirs, target), daemon=True, name="hffm-opt-worker")
                proc.start()
                theirs.close()
                self._conns.append(mine)
                self._procs.append(proc)
        except BaseException:
            self.close()
            raise

    def __len__(self) -> int:
        return len(self._procs)

    def pids(self) -> list[int]:
        """The workers' process ids."""
        return [p.pid for p in self._procs]

    def map(self, items: Sequence[Any]) -> list[Any]:
        """``[target(item) for item in items]``, item ``i`` on worker ``i`` (at most one item per worker), all at once.
        The first error of a call is raised after every call has answered; a worker that dies raises RuntimeError."""
        if len(items) > len(self._procs):
            raise ValueError(f"{len(items)} items for {len(self._procs)} workers: at most one item per worker")
        self._busy = True
        for conn, item in zip(self._conns, items):
            conn.send(item)
        replies = []
        for conn, proc in zip(self._conns, self._procs[:len(items)]):
            try:
                replies.append(conn.recv())
            except (EOFError, OSError):
                proc.join(JOIN_S)
                raise RuntimeError(f"a training worker process ended unexpectedly (exit code {proc.exitcode}; "
                                   "e.g. killed for memory): use fewer devices per call (devices_per_call)") from None
        self._busy = False
        for ok, value in replies:
            if not ok:
                raise value
        return [value for _, value in replies]

    def close(self) -> None:
        """Stop the workers: each is asked to exit and killed if it has not within :data:`JOIN_S`; killed at once when
        a call is still running (abandoned by Ctrl-C or an error)."""
        for conn in self._conns:
            try:
                conn.send(None)
            except (OSError, ValueError):
                pass
        for proc in self._procs:
            if not self._busy:
                proc.join(JOIN_S)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for conn in self._conns:
            conn.close()
        self._conns, self._procs = [], []

    def __enter__(self) -> "ForkedWorkers":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
