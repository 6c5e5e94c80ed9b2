"""Worker pools that leave Ctrl-C to their parent (hffm_opt._pools), and F4's forked cluster workers."""

from __future__ import annotations

import multiprocessing
import os
import signal

import numpy as np
import pytest

from hffm_opt._pools import ignore_sigint, start_pool
from hffm_opt.solvers.f4.decomposition import _pool


def sigint_state(_=None) -> tuple[bool, bool]:
    """(SIGINT ignored, SIGINT blocked) in this process."""
    blocked = signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, [])
    return signal.getsignal(signal.SIGINT) == signal.SIG_IGN, blocked


def knapsack(seed: int) -> str:
    """A small integer program on HiGHS; its model status."""
    import highspy

    rng = np.random.default_rng(seed)
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    n = 60
    for j in range(n):
        h.addVar(0.0, 1.0)
        h.changeColIntegrality(j, highspy.HighsVarType.kInteger)
        h.changeColCost(j, -float(rng.integers(1, 100)))
    for _ in range(5):
        h.addRow(-highspy.kHighsInf, 100.0, n, np.arange(n, dtype=np.int32), rng.integers(1, 30, n).astype(float))
    h.run()
    return h.modelStatusToString(h.getModelStatus())


@pytest.fixture
def default_sigint():
    """The default Ctrl-C handler, as in a terminal (a test run in the background may start with SIGINT ignored)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_the_workers_ignore_sigint_and_the_parent_keeps_its_handler(default_sigint, method):
    pool = start_pool(multiprocessing.get_context(method), 2, ignore_sigint)
    try:
        assert pool.map(sigint_state, range(4)) == [(True, False)] * 4
    finally:
        pool.terminate()
    assert sigint_state() == (False, False) and signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_ctrl_c_while_the_pool_starts_is_raised_once_it_has_started_and_stops_it(default_sigint):
    fork = multiprocessing.get_context("fork")
    started = []

    class Interrupted:
        """A context whose pool gets a Ctrl-C half-way through starting."""

        def Pool(self, *args, **kwargs):
            os.kill(os.getpid(), signal.SIGINT)  # held back: no KeyboardInterrupt inside the pool's start
            started.append(fork.Pool(*args, **kwargs))
            return started[0]

    with pytest.raises(KeyboardInterrupt):
        start_pool(Interrupted(), 2, ignore_sigint)
    assert started and all(not p.is_alive() for p in started[0]._pool)  # terminated
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_forked_cluster_workers_solve_after_the_parent_has_solved():
    """A process forked after HiGHS has solved inherits its scheduler without the threads: without
    ``forget_highs_threads`` (F4's worker initializer) the child's first solve never returns."""
    assert knapsack(0) == "Optimal"  # the parent's scheduler now exists
    pool = _pool(2, ())
    try:
        statuses = pool.map_async(knapsack, (1, 2)).get(timeout=60)
    except multiprocessing.TimeoutError:
        pytest.fail("a forked worker's HiGHS solve did not return")
    finally:
        pool.terminate()
    assert statuses == ["Optimal", "Optimal"]
