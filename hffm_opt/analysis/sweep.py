"""Sweeps of independent cells (scheduler x scenario x seed x E_agg, ...) serially, on local processes or on a Dask
cluster, with every finished cell saved at once so that an interrupted sweep resumes where it stopped.

A *cell* is a small JSON-able dict of the parameters of one unit of work; ``fn(cell)`` (a module-level function, so
that other processes can import it) returns its JSON-able result. :func:`run_cells` returns the results in the
order of the cells whatever order they finish in, so a sweep gives the same table serially, with ``workers`` local
processes or on a cluster.

With a ``store`` folder, each result is written atomically to ``store/<key>.json`` as soon as its cell finishes,
where ``<key>`` hashes the function's name, the cell and the package version: re-running the same sweep reads the
finished cells back and computes only the missing ones; another sweep, function or version never reuses them, nor
a file edited since (each holds the SHA-256 of its cell and result).

A Dask cluster elsewhere: on one machine ``dask scheduler`` (it prints ``tcp://HOST:8786``), on each worker machine
(with this package installed) ``dask worker tcp://HOST:8786 --nthreads 1``; then pass ``--cluster tcp://HOST:8786``.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import multiprocessing.resource_tracker
import multiprocessing.util
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from .._io import atomic_write, dumps_json
from .._pools import ignore_sigint, start_pool
from .._version import __version__
from ..errors import ConfigError


def cell_key(fn: Callable, cell: dict) -> str:
    """The file name stem of a cell's result: a hash of the function, the cell and the package version."""
    text = json.dumps({"fn": f"{fn.__module__}.{fn.__qualname__}", "cell": cell, "version": __version__},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass
class SweepStats:
    """How a sweep went: cells in all, read back from the store, computed now."""

    cells: int = 0
    reused: int = 0
    computed: int = 0


def _digest(cell, result) -> str:
    """SHA-256 of a stored cell and its result (both as strict JSON), kept beside them."""
    return hashlib.sha256(dumps_json({"cell": cell, "result": result}).encode()).hexdigest()


def _load(path: Path, cell: dict):
    """The stored result of ``cell``, or None when the file is missing, unreadable, of another cell, or edited
    since it was written (its digest no longer matches): then the cell is computed again, never trusted."""
    try:
        doc = json.loads(path.read_text())
        if doc["cell"] == json.loads(dumps_json(cell)) and doc["sha256"] == _digest(doc["cell"], doc["result"]):
            return doc["result"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


STOP_S = 3.0  # seconds the workers of a stopped sweep have to exit through Python before they are killed


def _init_worker() -> None:
    ignore_sigint()  # Ctrl-C is the parent's to handle: it terminates the pool
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    # a worker that is exiting (its pool closed, or terminated) ignores SIGTERM from then on: its exit callbacks
    # (torch's among them) run after multiprocessing's finalizers, and a SystemExit raised inside one is printed
    # as a traceback on the user's terminal
    multiprocessing.util.Finalize(None, signal.signal, (signal.SIGTERM, signal.SIG_IGN), exitpriority=100)


def _exit_on_sigterm(signum, frame) -> None:
    """A terminated worker exits through Python, so that its clean-up runs (named semaphores that a library made,
    e.g. pyomo's, unlinked; a killed worker leaves them to the resource tracker, which warns about them at exit).
    Once: a later SIGTERM is ignored (see :func:`_init_worker`)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise SystemExit(128 + signum)


def _stop(pool) -> None:
    """Terminate ``pool``: its workers get :data:`STOP_S` seconds to exit cleanly (one inside a long native call,
    e.g. a solver's, cannot), then the ones still running are killed."""
    workers = [p for p in multiprocessing.active_children() if p.name.startswith("SpawnPoolWorker")]
    stopping = threading.Thread(target=pool.terminate, daemon=True)
    stopping.start()
    stopping.join(STOP_S)
    for proc in workers:
        if proc.is_alive():
            proc.kill()
    stopping.join()


def _indexed(job: tuple[Callable, int, dict]) -> tuple[int, object]:
    fn, i, cell = job
    return i, fn(cell)


def _local(fn: Callable, cells: list[dict], todo: list[int], workers: int) -> Iterator[tuple[int, object]]:
    """(index, result) of the cells ``todo`` as they finish on ``workers`` local processes (which leave Ctrl-C to
    this one, :mod:`hffm_opt._pools`)."""
    multiprocessing.resource_tracker.ensure_running()  # before start_pool: starting the tracker unblocks SIGINT
    pool = start_pool(multiprocessing.get_context("spawn"), workers, _init_worker)
    try:
        yield from pool.imap_unordered(_indexed, [(fn, i, cells[i]) for i in todo])
        pool.close()  # the workers exit on their own
        pool.join()
    except BaseException:
        _stop(pool)  # on an error, Ctrl-C or an abandoned sweep no cell keeps running (terminate joins the pool)
        raise


def _dask(fn: Callable, cells: list[dict], todo: list[int], address: str) -> Iterator[tuple[int, object]]:
    """(index, result) of the cells ``todo`` as they finish on the Dask scheduler at ``address``."""
    try:
        from distributed import Client
        from distributed import as_completed as finished
    except ImportError:
        raise ConfigError(f"--cluster = {address!r}: needs the 'distributed' package "
                          f"(pip install 'hffm-opt[cluster]')") from None
    try:
        client = Client(address, timeout="10s", set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise ConfigError(f"--cluster = {address!r}: no Dask scheduler answers there ({exc})") from None
    try:
        futures = {client.submit(fn, cells[i], pure=False): i for i in todo}
        try:
            with client.as_current():
                for fut in finished(futures):
                    yield futures[fut], fut.result()
        finally:
            client.cancel(list(futures))
    finally:
        client.close()


def run_cells(fn: Callable[[dict], object], cells: Iterable[dict], *, workers: int = 1, cluster: str | None = None,
              store=None, progress: Callable | None = None) -> tuple[list, SweepStats]:
    """``[fn(cell) for cell in cells]`` (in that order) with ``workers`` local processes or on the Dask scheduler at
    ``cluster`` (``tcp://HOST:PORT``), each result saved to ``store`` as it finishes and reused from there.

    ``progress(n_total)`` returns a callable that is called once per finished cell (e.g. a tqdm's ``update``).
    An exception in a cell stops the sweep and propagates; the cells finished before it stay saved."""
    cells = list(cells)
    store = Path(store) if store is not None else None
    if store is not None:
        store.mkdir(parents=True, exist_ok=True)
    paths = [store / f"{cell_key(fn, c)}.json" if store is not None else None for c in cells]
    results: list = [None] * len(cells)
    todo = []
    for i, path in enumerate(paths):
        found = _load(path, cells[i]) if path is not None and path.exists() else None
        if found is None:
            todo.append(i)
        else:
            results[i] = found
    stats = SweepStats(len(cells), len(cells) - len(todo), len(todo))
    tick = progress(len(todo)) if progress and todo else (lambda: None)

    def finish(i: int, result) -> None:
        results[i] = json.loads(dumps_json(result))  # the same strict JSON whether computed now or read back
        if paths[i] is not None:
            cell = json.loads(dumps_json(cells[i]))
            atomic_write(paths[i], dumps_json({"cell": cell, "result": results[i],
                                               "sha256": _digest(cell, results[i])}))
        tick()

    if cluster and todo:
        done = _dask(fn, cells, todo, cluster)
    elif workers > 1 and len(todo) > 1:
        done = _local(fn, cells, todo, min(workers, len(todo)))
    else:
        done = ((i, fn(cells[i])) for i in todo)
    try:
        for i, result in done:
            finish(i, result)
    finally:
        done.close()  # stops the pool or cancels the cluster's futures at once on an error or Ctrl-C
    return results, stats
