"""The default learning experiment: the scenario, the partition and the federated data speak of the same model,
the same modules and the same sample counts, and one seed gives one experiment."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from hffm_opt.learners.catalogue import module_catalogue
from hffm_opt.learners.partitioning import device_tables, sample_counts
from hffm_opt.learners.setup import _runnable_tasks, learning_setup
from hffm_opt.learners.specs import TaskSpec

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {"d_model": 16, "d_ff": 16, "d_expert": 16, "n_heads": 2}


def _setup(seed=0, **kw):
    args = dict(scenario="clustered", n_edges=2, devices_per_edge=3, alpha=0.5, seed=seed, cache=False,
                benchmark_kwargs={"n_samples": 600, "p_missing": 0.2}, model_config=TINY,
                pretrain_kwargs={"epochs": 0.5, "encoder_epochs": 0})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HFFM_OPT_CACHE", str(kw.pop("cache_root")))
        return learning_setup("synthetic", **{**args, **kw})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    return {"a": _setup(0, cache_root=root), "again": _setup(0, cache_root=root), "other": _setup(1, cache_root=root),
            "root": root}


def test_scenario_modules_are_the_model_catalogue(runs):
    s = runs["a"]
    assert s.scenario.modules == module_catalogue(s.data.model)
    assert s.scenario.module_names == s.data.model.module_names()
    assert s.scenario.modalities == s.benchmark.train.modality_names and s.scenario.tasks == s.data.model.task_names
    assert s.scenario.meta["benchmark"] == "synthetic" and s.scenario.meta["alpha"] == 0.5
    assert list(runs["root"].iterdir()) == []  # cache=False writes nothing


def test_sample_counts_are_those_of_the_partition(runs):
    s = runs["a"]
    dev = s.scenario.devices
    tasks = _runnable_tasks(s.benchmark, dev.modalities, dev.tasks)
    train, test = device_tables(s.benchmark.train, s.partition, dev.modalities, tasks)
    assert np.array_equal(dev.samples, sample_counts(train)) and (dev.samples.sum(axis=1) > 0).all()
    assert len(s.data.train) == len(s.data.test) == s.scenario.n_devices
    for mine, want in zip([*s.data.train, *s.data.test], train + test):  # the same rows, with encoded sources
        assert torch.equal(mine.index, want.index) and torch.equal(mine.labels, want.labels)
        assert set(mine.encoded) == {m for m in mine.modality_names if s.data.model.is_frozen(f"encoder:{m}")}
    rows = np.concatenate([*s.partition.train, *s.partition.test, s.partition.unassigned])
    assert np.array_equal(np.sort(rows), np.arange(len(s.benchmark.train)))  # every pool row exactly once
    assert torch.equal(s.data.global_test.labels, s.benchmark.test.labels)


def test_same_seed_same_experiment_other_seed_other_partition(runs):
    a, again, other = runs["a"], runs["again"], runs["other"]
    assert all(np.array_equal(x, y) for x, y in zip(a.partition.train + a.partition.test,
                                                    again.partition.train + again.partition.test))
    assert np.array_equal(a.scenario.devices.samples, again.scenario.devices.samples)
    assert all(torch.equal(p, q) for p, q in zip(a.data.model.parameters(), again.data.model.parameters()))
    assert not np.array_equal(a.scenario.devices.samples, other.scenario.devices.samples)
    assert not all(torch.equal(p, q) for p, q in zip(a.data.model.parameters(), other.data.model.parameters()))


def test_too_small_a_pool_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no training rows"):
        _setup(0, cache_root=tmp_path, devices_per_edge=20, benchmark_kwargs={"n_samples": 100, "public_fraction": 0.5})


def test_a_device_without_a_runnable_task_gets_the_first_it_can_run():
    bench = SimpleNamespace(modalities=(SimpleNamespace(name="image"), SimpleNamespace(name="text")),
                            tasks=(TaskSpec("vqa", 2, ("image", "text")), TaskSpec("shape", 2, ("image",)),
                                   TaskSpec("qtype", 2, ("text",))))
    mods = np.array([[1, 1], [1, 0], [0, 1], [1, 0]], bool)
    drawn = np.array([[1, 0, 1], [1, 0, 0], [1, 1, 0], [0, 1, 0]], bool)
    assert _runnable_tasks(bench, mods, drawn).tolist() == [
        [True, False, True],  # both modalities: what it drew
        [False, True, False],  # image only, drew only vqa: gets shape
        [False, False, True],  # text only, drew vqa and shape: gets qtype
        [False, True, False],  # image only, drew shape: keeps it
    ]
