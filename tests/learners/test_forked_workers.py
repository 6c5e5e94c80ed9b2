"""The forked worker processes of the trainer (learners.workers): results in order from other processes on one
torch thread, errors raised again with their type, a dead or a busy worker handled. That a training run stops its
workers is in test_device.py."""

import multiprocessing as mp
import os
import threading
import time

import pytest
import torch

from hffm_opt.learners.workers import ForkedWorkers, fork_available, shared_zeros

pytestmark = [pytest.mark.skipif(not fork_available(), reason="this system cannot fork worker processes"),
              pytest.mark.usefixtures("one_torch_thread")]


def _square_where(x):
    return x * x, os.getpid(), torch.get_num_threads()


def test_map_returns_results_in_order_from_other_processes_on_one_torch_thread():
    torch.set_num_threads(2)
    try:
        with ForkedWorkers(_square_where, 2) as workers:
            for items in ([3, 4], [5], [7, 6]):
                out = workers.map(items)
                assert [v for v, _, _ in out] == [i * i for i in items]
                assert {t for _, _, t in out} == {1}
                pids = [p for _, p, _ in out]
                assert os.getpid() not in pids and len(set(pids)) == len(items)
            with pytest.raises(ValueError, match="at most one item per worker"):
                workers.map([1, 2, 3])
        assert torch.get_num_threads() == 2  # the caller's threads are its own
    finally:
        torch.set_num_threads(1)


def test_an_error_in_a_call_is_raised_with_its_type_and_the_workers_go_on():
    with ForkedWorkers(lambda x: 1 // x, 2) as workers:
        with pytest.raises(ZeroDivisionError):
            workers.map([1, 0])
        assert workers.map([1, 2]) == [1, 0]
    with ForkedWorkers(lambda x: threading.Lock(), 1) as workers:  # a result that does not pickle
        with pytest.raises(RuntimeError, match="could not be sent back"):
            workers.map([0])


def test_a_worker_that_dies_raises_a_clear_error():
    with ForkedWorkers(lambda code: os._exit(code), 2) as workers:
        with pytest.raises(RuntimeError, match="ended unexpectedly .exit code 3"):
            workers.map([3, 3])


def test_close_kills_a_busy_worker_at_once_and_leaves_no_process():
    workers = ForkedWorkers(lambda s: time.sleep(s), 2)
    pids = workers.pids()
    caller = threading.Thread(target=lambda: pytest.raises(RuntimeError, workers.map, [60, 60]), daemon=True)
    caller.start()
    time.sleep(0.5)
    start = time.perf_counter()
    workers.close()
    assert time.perf_counter() - start < 3  # not the 60 s of the calls, nor the polite wait for idle workers
    caller.join(5)
    for pid in pids:
        with pytest.raises((ChildProcessError, ProcessLookupError)):
            os.waitpid(pid, os.WNOHANG)
    assert not [p for p in mp.active_children() if p.name == "hffm-opt-worker"]


def test_shared_buffers_carry_writes_both_ways_between_a_worker_and_its_caller():
    buffers = {"a": shared_zeros((3, 4)), "b": shared_zeros((5,), torch.int64), "empty": shared_zeros((0, 2))}
    assert buffers["a"].shape == (3, 4) and buffers["b"].dtype == torch.int64 and buffers["empty"].numel() == 0
    assert not buffers["a"].any()

    def double_a_into_b(scale):
        buffers["b"].copy_(torch.arange(5) * scale)
        return float(buffers["a"].sum())

    with ForkedWorkers(double_a_into_b, 1) as workers:
        buffers["a"].fill_(0.5)  # written after the fork: the worker sees it
        assert workers.map([3]) == [6.0]
        assert buffers["b"].tolist() == [0, 3, 6, 9, 12]
