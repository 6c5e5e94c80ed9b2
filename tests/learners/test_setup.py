"""The default learning experiment: the scenario, the partition and the federated data speak of the same model,
the same modules and the same sample counts, and one seed gives one experiment."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from hffm_opt.errors import ConfigError
from hffm_opt.learners.catalogue import module_catalogue
from hffm_opt.learners.partitioning import device_tables, sample_counts
from hffm_opt.learners.priced import priced_catalogue
from hffm_opt.learners.setup import _runnable_tasks, learning_setup, validation_split
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
            "proxy": _setup(0, cache_root=root, pricing="proxy"), "root": root}


def test_scenario_modules_are_the_priced_catalogue_or_the_proxy(runs):
    s, proxy = runs["a"], runs["proxy"]
    assert s.scenario.modules == priced_catalogue(s.data.model, s.scenario.prototype.model_bits)
    assert sum(m.update_bits for m in s.scenario.modules) == s.scenario.prototype.model_bits == 48e6
    assert proxy.scenario.modules == module_catalogue(proxy.data.model)  # today's behaviour, on request
    assert proxy.scenario.module_names == s.scenario.module_names
    assert (s.scenario.meta["pricing"], proxy.scenario.meta["pricing"]) == ("foundation", "proxy")
    assert np.array_equal(proxy.scenario.devices.samples, s.scenario.devices.samples)  # only the pricing differs
    assert s.scenario.module_names == s.data.model.module_names()
    assert s.scenario.modalities == s.benchmark.train.modality_names and s.scenario.tasks == s.data.model.task_names
    assert s.scenario.meta["benchmark"] == "synthetic" and s.scenario.meta["alpha"] == 0.5
    assert list(runs["root"].iterdir()) == []  # cache=False writes nothing


def test_sample_counts_are_those_of_the_partition(runs):
    s = runs["a"]
    dev = s.scenario.devices
    tasks = _runnable_tasks(s.benchmark, dev.modalities, dev.tasks)
    train, test = device_tables(s.pool, s.partition, dev.modalities, tasks)
    assert np.array_equal(dev.samples, sample_counts(train)) and (dev.samples.sum(axis=1) > 0).all()
    assert len(s.data.train) == len(s.data.test) == s.scenario.n_devices
    for mine, want in zip([*s.data.train, *s.data.test], train + test):  # the same rows, with encoded sources
        assert torch.equal(mine.index, want.index) and torch.equal(mine.labels, want.labels)
        assert set(mine.encoded) == {m for m in mine.modality_names if s.data.model.is_frozen(f"encoder:{m}")}
    rows = np.concatenate([*s.partition.train, *s.partition.test, s.partition.unassigned])
    assert np.array_equal(np.sort(rows), np.arange(len(s.pool)))  # every pool row exactly once
    assert np.array_equal(np.sort(np.concatenate([s.pool_rows, s.validation_rows])), np.arange(len(s.benchmark.train)))
    assert torch.equal(s.pool.index, s.benchmark.train.index[s.pool_rows])
    assert torch.equal(s.data.global_test.labels, s.benchmark.test.labels)


def test_same_seed_same_experiment_other_seed_other_partition(runs):
    a, again, other = runs["a"], runs["again"], runs["other"]
    assert all(np.array_equal(x, y) for x, y in zip(a.partition.train + a.partition.test,
                                                    again.partition.train + again.partition.test))
    assert np.array_equal(a.scenario.devices.samples, again.scenario.devices.samples)
    assert all(torch.equal(p, q) for p, q in zip(a.data.model.parameters(), again.data.model.parameters()))
    assert not np.array_equal(a.scenario.devices.samples, other.scenario.devices.samples)
    # one foundation model for every seed (the frozen core is the same); the seed draws the trainable modules
    ma, mo = a.data.model, other.data.model
    frozen = {n for n, p in ma.named_parameters() if ma.is_frozen(ma.module_of(n))}
    assert frozen and all(torch.equal(p, q) for (n, p), (_, q) in zip(ma.named_parameters(), mo.named_parameters())
                          if n in frozen)
    assert not all(torch.equal(p, q) for (n, p), (_, q) in zip(ma.named_parameters(), mo.named_parameters())
                   if n not in frozen)


def test_too_small_a_pool_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="no training rows"):
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


def _row_keys(table, raw):
    """Content of each row of ``table`` (its items' raw content in ``raw``'s sources, and its labels) as bytes."""
    out = []
    for i in range(len(table)):
        parts = [raw.sources[m][int(j)].numpy().tobytes() if j >= 0 else b"-" for m, j in
                 zip(raw.modality_names, table.index[i].tolist())]
        out.append(b"|".join(parts) + table.labels[i].numpy().tobytes())
    return out


def test_validation_is_disjoint_from_devices_and_global_test(runs):
    s = runs["a"]
    val, raw = s.data.validation, s.benchmark.train
    assert val is not None and len(val) == len(s.validation_rows) == round(0.1 * len(raw))  # one row per item here
    assert set(val.encoded) == set(s.data.global_test.encoded)  # scored like the global test set
    assert torch.equal(val.labels, raw.labels[s.validation_rows])
    # row ids: no validation row is a pool row, so none is on a device (train or local test part)
    assert not set(s.validation_rows.tolist()) & set(s.pool_rows.tolist())
    device_rows = s.pool_rows[np.concatenate([*s.partition.train, *s.partition.test])]
    assert not set(s.validation_rows.tolist()) & set(device_rows.tolist())
    # content: no validation row's items and labels appear in a device table or in the global test set
    val_keys = set(_row_keys(raw.subset(s.validation_rows), raw))
    dev_keys = {k for t in [*s.data.train, *s.data.test] for k in _row_keys(t, raw)}
    test_keys = set(_row_keys(s.benchmark.test, s.benchmark.test))
    assert len(dev_keys) > 0 and not val_keys & dev_keys and not val_keys & test_keys
    # items, not just rows: no source item of the validation rows is used by a device row
    for j, m in enumerate(raw.modality_names):
        used = {int(i) for t in s.data.train for i in t.index[:, j].tolist() if i >= 0}
        assert not used & {int(i) for i in val.index[:, j].tolist() if i >= 0}, m


def test_validation_split_keeps_items_together_and_can_be_off():
    from hffm_opt.learners.specs import ModalitySpec
    from hffm_opt.learners.table import MultiModalTable

    mods = tuple(ModalitySpec(m, "vector", (2,), n_tokens=1, hidden=0) for m in ("image", "text"))
    item = np.repeat(np.arange(20), 3)  # 20 images, 3 rows each (an image row and two question rows)
    index = np.stack([item, np.tile([-1, 0, 1], 20)], axis=1)
    table = MultiModalTable("t", mods, (TaskSpec("y", 2),), {"image": torch.zeros(20, 2), "text": torch.zeros(2, 2)},
                            index, np.zeros((60, 1), np.int64))
    pool, val = validation_split(table, 0.25, seed=3)
    assert len(val) == 15 and not set(item[val]) & set(item[pool])  # 5 whole images
    again, val2 = validation_split(table, 0.25, seed=3)
    assert np.array_equal(val, val2) and not np.array_equal(val, validation_split(table, 0.25, seed=4)[1])
    pool, val = validation_split(table, 0.0, seed=3)
    assert len(val) == 0 and np.array_equal(pool, np.arange(60))


def test_bad_options_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="pricing = 'paper'"):
        _setup(0, cache_root=tmp_path, pricing="paper")
    with pytest.raises(ConfigError, match="validation_fraction = 1.0"):
        _setup(0, cache_root=tmp_path, validation_fraction=1.0)
