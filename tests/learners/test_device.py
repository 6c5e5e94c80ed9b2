"""The torch device of the learners: names, the clear error where CUDA is missing, and CPU/CUDA agreement (run only
where CUDA exists; skipped with its reason elsewhere)."""

import copy
import dataclasses
import multiprocessing as mp
import os

import numpy as np
import pytest
import torch

from hffm_opt.errors import ConfigError
from hffm_opt.learners import device as device_module
from hffm_opt.learners.device import (
    ACTIVATION_COPIES,
    CPU_DEVICES_PER_CALL,
    PARAMETER_COPIES,
    check_device_name,
    cpu_calls,
    devices_per_call,
    free_memory,
    one_torch_thread,
    resolve_device,
    waves,
)
from hffm_opt.learners.local import local_train, stack_params
from hffm_opt.learners.packed import PackedTables
from hffm_opt.learners.setup import learning_setup
from hffm_opt.learners.trainer import CHECKPOINT, TrainConfig, _Run, train
from hffm_opt.schedulers import schedule

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available on this machine "
                          f"(torch {torch.__version__}, built for CUDA {torch.version.cuda})")
CFG = TrainConfig(rounds=2, lr=5e-3, local_steps=2, batch_size=8, eval_every=1, personalised=True)


def test_device_names_and_the_missing_cuda_error():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("gpu", "cuda:x", "cpu:1", ""):
        with pytest.raises(ConfigError, match="device"):
            check_device_name(bad)
    with pytest.raises(ConfigError):
        TrainConfig(device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")
        with pytest.raises(ConfigError, match="CUDA is not available"):
            train(*_small()[:2], _small()[2], dataclasses.replace(CFG, device="cuda"))
    assert devices_per_call(torch.device("cpu"), 14, 16, 64, 70_000) == 256


def test_cpu_calls_shrink_to_the_available_memory_and_a_step_that_cannot_fit_is_refused(monkeypatch):
    per_client = 4 * (ACTIVATION_COPIES * 16 * 14 * 64 + PARAMETER_COPIES * 70_000)  # bytes, the documented estimate
    monkeypatch.setattr(device_module, "free_memory", lambda device: 2 * 2 * 10 * per_client)
    assert devices_per_call(torch.device("cpu"), 14, 16, 64, 70_000, calls_at_once=2) == 10  # 2 calls in half of it
    assert devices_per_call(torch.device("cpu"), 14, 16, 64, 70_000, calls_at_once=1) == 20
    monkeypatch.setattr(device_module, "free_memory", lambda device: 10 ** 15)
    assert devices_per_call(torch.device("cpu"), 14, 16, 64, 70_000) == CPU_DEVICES_PER_CALL
    monkeypatch.setattr(device_module, "free_memory", lambda device: per_client)
    with pytest.raises(ConfigError, match=r"batch_size = 16: one device's local step needs about .* GiB, and each of "
                                          r"the 1 calls at once may use"):
        devices_per_call(torch.device("cpu"), 14, 16, 64, 70_000)


def test_one_torch_thread_inside_the_block_on_a_cpu_and_the_count_restored_after():
    torch.set_num_threads(2)
    try:
        with one_torch_thread(torch.device("cpu")):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with pytest.raises(KeyError), one_torch_thread():
            assert torch.get_num_threads() == 1
            raise KeyError("a failing block")
        assert torch.get_num_threads() == 2
        with one_torch_thread(torch.device("cuda")):  # another device: this process's CPU threads untouched
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)


@pytest.mark.parametrize("n,per_call,workers", [(1000, 256, 2), (400, 256, 2), (40, 256, 2), (1, 256, 4),
                                                 (7, 3, 1), (1000, 256, 3), (513, 256, 1), (0, 256, 2)])
def test_cpu_calls_cover_every_device_once_in_balanced_calls(n, per_call, workers):
    calls = cpu_calls(n, per_call, workers)
    assert [i for c in calls for i in range(n)[c]] == list(range(n))  # every device once, in order
    sizes = [c.stop - c.start for c in calls]
    assert all(1 <= s <= per_call for s in sizes) and (not sizes or max(sizes) - min(sizes) <= max(sizes) // 2 + 1)
    if n >= workers:  # every core gets a call: the number of calls is a multiple of the workers, or one per device
        assert len(calls) % workers == 0 or len(calls) == n
    assert len(calls) <= max(-(-n // per_call), 1) + workers  # no more calls than the cores need
    grouped = waves(n, per_call, workers)  # the same calls, at most one per core in each wave
    assert [c for w in grouped for c in w] == calls and all(1 <= len(w) <= workers for w in grouped)


def test_training_on_two_cores_is_deterministic_and_agrees_with_one_core():
    """Two torch threads: the calls of an edge round run two at once in forked workers (learners.workers); the
    result does not depend on which finishes first, and equals the one-thread run to float rounding."""
    scenario, plan, data = _small()
    config = dataclasses.replace(CFG, devices_per_call=2)  # 6 devices: 3 calls, two of them at once
    torch.set_num_threads(2)
    try:
        runs = [train(scenario, plan, data, config) for _ in range(2)]
    finally:
        torch.set_num_threads(1)
    one = train(scenario, plan, data, config)
    assert runs[0].records == runs[1].records
    for r, s in zip(runs[0].records, one.records):
        assert r["time_s"] == s["time_s"] and r["participants"] == s["participants"]
        assert r["accuracy"] == pytest.approx(s["accuracy"], abs=1.0)  # percent; a near tie may flip a prediction


def test_workers_train_from_the_current_cluster_models_and_return_every_clusters_sums():
    """The workers read the clusters' copies and write their sums through shared memory (learners.workers.shared_zeros):
    after edge rounds across a cloud aggregation, with a cluster split between two calls of a wave, the cluster models
    equal those of the one-thread run (all calls in this process) to float rounding."""
    scenario, plan, data = _small()
    config = dataclasses.replace(CFG, eval_every=0, devices_per_call=2)  # calls 0-1 | 2-3 (two clusters) | 4-5

    def clusters_after(threads, rounds=3):
        torch.set_num_threads(threads)
        run = _Run(scenario, plan, data, config)
        try:
            for r in range(1, rounds + 1):
                run.edge_round(r)
            assert (run._pool is not None) == (threads > 1)
            return {n: x.clone() for n, x in run.clusters.items()}
        finally:
            run.close()
            torch.set_num_threads(1)

    two, one = clusters_after(2), clusters_after(1)
    start = {n: p.detach() for n, p in data.model.named_parameters() if n in one}
    assert any(not torch.allclose(one[n][e], start[n]) for n in one for e in range(2))  # training moved them
    for n in one:
        torch.testing.assert_close(two[n], one[n], rtol=1e-4, atol=1e-5)


def test_a_training_run_stops_its_workers_when_it_ends_or_fails():
    scenario, plan, data = _small()
    config = dataclasses.replace(CFG, eval_every=0, devices_per_call=2)
    torch.set_num_threads(2)
    seen = []

    def fail(record):
        seen.append([p.pid for p in mp.active_children() if p.name == "hffm-opt-worker"])
        raise KeyError("stop")

    try:
        train(scenario, plan, data, config, on_round=lambda r: seen.append(
            [p.pid for p in mp.active_children() if p.name == "hffm-opt-worker"]))
        assert len(seen[0]) == 2  # two calls at once ran in two workers
        assert not [p for p in mp.active_children() if p.name == "hffm-opt-worker"]
        with pytest.raises(KeyError):
            train(scenario, plan, data, config, on_round=fail)
        assert len(seen[-1]) == 2 and not [p for p in mp.active_children() if p.name == "hffm-opt-worker"]
    finally:
        torch.set_num_threads(1)


def _records_in_a_daemon(queue, config):
    torch.set_num_threads(2)
    queue.put(train(*_small(), config).records)


def test_training_inside_a_daemon_process_runs_its_calls_in_that_process():
    """A multiprocessing pool's worker (a daemon, e.g. a sweep's: spawned, as here, since a child forked from a process
    whose OpenMP threads ran may hang in its own) may not fork workers: the calls run one after the other there, with
    the same result."""
    scenario, plan, data = _small()
    config = dataclasses.replace(CFG, eval_every=0, devices_per_call=2)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_records_in_a_daemon, args=(queue, config), daemon=True)
    proc.start()
    records = queue.get(timeout=120)
    proc.join(30)
    assert proc.exitcode == 0
    assert records == train(scenario, plan, data, config).records


_SETUP = {}


def _small():
    """A small synthetic experiment (2 clusters x 3 devices) and a hierarchical plan."""
    if not _SETUP:
        s = learning_setup("synthetic", scenario="clustered", n_edges=2, devices_per_edge=3, heterogeneity="none",
                           alpha=0.5, benchmark_kwargs={"n_samples": 900}, cache=False,
                           model_config={"d_model": 16, "d_ff": 32, "d_expert": 16, "n_heads": 2},
                           pretrain_kwargs={"epochs": 1, "encoder_epochs": 0})
        _SETUP["s"] = (s.scenario, schedule(s.scenario, "hierarchical", e_agg=2), s.data)
    return _SETUP["s"]


@CUDA
def test_local_training_on_cuda_agrees_with_the_cpu():
    scenario, plan, data = _small()
    model = data.model
    packed = PackedTables.from_tables(data.train)
    rows = packed.sample(np.arange(len(packed)), 3, 8, np.random.default_rng(0))
    masks = np.ones((len(packed), len(model.module_names())), bool)
    cpu = local_train(model, stack_params(model, len(packed)), masks, packed.gather(rows), 3, 1e-2, optimizer="adam")
    gpu_model = copy.deepcopy(model).to("cuda")
    gpu = local_train(gpu_model, stack_params(gpu_model, len(packed)), masks, packed.to("cuda").gather(rows), 3,
                      1e-2, optimizer="adam")
    for n, x in cpu.params.items():
        assert gpu.params[n].device.type == "cuda"
        torch.testing.assert_close(gpu.params[n].cpu(), x, rtol=1e-4, atol=1e-5)
    assert torch.equal(gpu.sample_counts.cpu(), cpu.sample_counts)


@CUDA
def test_training_on_cuda_agrees_with_the_cpu(tmp_path):
    scenario, plan, data = _small()
    cpu = train(scenario, plan, data, CFG, checkpoint_dir=tmp_path / "cpu")
    gpu = train(scenario, plan, data, dataclasses.replace(CFG, device="cuda"), checkpoint_dir=tmp_path / "gpu")
    a = torch.load(tmp_path / "cpu" / CHECKPOINT, weights_only=True)["clusters"]
    b = torch.load(tmp_path / "gpu" / CHECKPOINT, weights_only=True)["clusters"]  # saved as CPU tensors
    for n in a:  # rounds of Adam amplify float32 summation-order differences (up to 1.6e-5 seen on an H200)
        torch.testing.assert_close(b[n], a[n], rtol=1e-3, atol=1e-4)
    for r, s in zip(cpu.records, gpu.records):
        assert r["time_s"] == s["time_s"] and r["participants"] == s["participants"]
        assert r["accuracy"] == pytest.approx(s["accuracy"], abs=1.0)  # percent; a near tie may flip a prediction
    assert data.model.backbone.norm.weight.device.type == "cpu"  # the caller's model is never moved


def test_free_host_memory_is_in_bytes_within_the_physical_memory():
    page = os.sysconf("SC_PAGE_SIZE")
    free_pages = os.sysconf("SC_AVPHYS_PAGES") * page  # memory no one uses: available memory is about it or more
    assert free_pages / 2 <= free_memory(torch.device("cpu")) <= os.sysconf("SC_PHYS_PAGES") * page
