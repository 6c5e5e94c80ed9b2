"""Packed device tables: the same rows as the per-device tables, vectorised sampling without replacement, gathering
equal to the tables' own batches, and the vectorised partition tables equal to the per-device ones."""

import numpy as np
import pytest
import torch

from hffm_opt.learners.benchmarks import load_benchmark
from hffm_opt.learners.packed import PackedTables
from hffm_opt.learners.partitioning import device_tables, packed_device_tables, partition


@pytest.fixture(scope="module")
def tables():
    bench = load_benchmark("synthetic", n_modalities=2, n_tasks=2, n_samples=500, p_missing=0.3, seed=1)
    mods = np.array([[1, 1], [1, 0], [0, 1], [1, 1], [1, 1]], bool)
    tasks = np.array([[1, 1], [1, 0], [0, 1], [1, 1], [0, 1]], bool)
    part = partition(bench.train, mods, tasks, alpha=0.5, seed=0)
    train, test = device_tables(bench.train, part, mods, tasks)
    return bench, part, mods, tasks, train, test


def test_packing_keeps_every_device_table(tables):
    bench, part, mods, tasks, train, test = tables
    packed = PackedTables.from_tables(train)
    assert len(packed) == len(train) and PackedTables.from_tables(packed) is packed
    assert np.array_equal(packed.row_counts(), [len(t) for t in train])
    assert np.array_equal(packed.label_counts(), np.stack([t.label_counts() for t in train]))
    for u, t in enumerate(train):
        assert torch.equal(packed[u].index, t.index) and torch.equal(packed[u].labels, t.labels)
    assert [len(t) for t in packed[1:3]] == [len(train[1]), len(train[2])]
    # tables with sources of their own: concatenated, indices shifted, the same items
    other = [train[0], type(train[1])(train[1].name, train[1].modalities, train[1].tasks,
                                      {m: s.clone() for m, s in train[1].sources.items()}, train[1].index,
                                      train[1].labels)]
    mixed = PackedTables.from_tables(other)
    for u, t in enumerate(other):
        got, want = mixed[u].batch(np.arange(len(t))), t.batch(np.arange(len(t)))
        for m in want.inputs:
            assert torch.equal(got.inputs[m], want.inputs[m])


def test_vectorised_partition_tables_equal_the_per_device_tables(tables):
    bench, part, mods, tasks, train, test = tables
    p_train, p_test = packed_device_tables(bench.train, part, mods, tasks)
    for packed, per_device in ((p_train, train), (p_test, test)):
        assert len(packed) == len(per_device)
        for u, t in enumerate(per_device):
            assert torch.equal(packed[u].index, t.index) and torch.equal(packed[u].labels, t.labels)


@pytest.mark.parametrize("steps,batch", [(2, 3), (5, 16)])
def test_sampling_draws_each_device_rows_without_replacement_pass_by_pass(tables, steps, batch):
    *_, train, _ = tables
    packed = PackedTables.from_tables(train)
    devices = np.array([3, 0, 4])
    rows = packed.sample(devices, steps, batch, np.random.default_rng(7))
    again = packed.sample(devices, steps, batch, np.random.default_rng(7))
    assert rows.shape == (3, steps, batch) and np.array_equal(rows, again)
    for i, u in enumerate(devices):
        lo, hi = packed.offsets[u], packed.offsets[u + 1]
        drawn = rows[i].reshape(-1)
        assert ((drawn >= lo) & (drawn < hi)).all()  # only the device's own rows
        n = hi - lo
        for start in range(0, len(drawn), n):  # every full pass is a permutation of its rows
            chunk = drawn[start:start + n]
            assert len(np.unique(chunk)) == len(chunk)
            if len(chunk) == n:
                assert set(chunk) == set(range(lo, hi))
    assert not np.array_equal(rows, packed.sample(devices, steps, batch, np.random.default_rng(8)))


def test_gathered_batches_equal_the_tables_batches(tables):
    *_, train, _ = tables
    packed = PackedTables.from_tables(train)
    rows = packed.sample(np.arange(len(train)), 2, 4, np.random.default_rng(0))
    b = packed.gather(rows, ["m0", "m1"])
    assert b.labels.shape == (len(train), 2, 4, 2) and b.inputs["m0"].shape == (len(train), 2, 4, 16)
    for u in range(len(train)):
        for s in range(2):
            want = train[u].batch(rows[u, s] - packed.offsets[u], modalities=["m0", "m1"])
            for m in ("m0", "m1"):
                assert torch.equal(b.inputs[m][u, s], want.inputs[m])
                assert torch.equal(b.present[m][u, s], want.present[m])
            assert torch.equal(b.labels[u, s], want.labels)
    with pytest.raises(ValueError, match="no rows"):
        empty = PackedTables(packed.name, packed.modalities, packed.tasks, packed.sources, packed.index,
                             packed.labels, np.concatenate([[0, 0], packed.offsets[1:]]))
        empty.sample([0], 1, 1, np.random.default_rng(0))


def test_the_cached_stream_of_gathered_rows_is_their_first_layer_stream(tables):
    """with_stream computes each distinct row once; gathering any rows returns exactly what the model computes
    for those rows, absent modalities included (present False)."""
    from hffm_opt.learners.model import M3TModel

    bench, _, _, _, train, _ = tables
    model = M3TModel(bench.model_config(d_model=16, d_ff=16, d_expert=16), seed=0)
    packed = PackedTables.from_tables(list(train) + list(train)[:2])  # two devices hold the same rows as two others
    cached = packed.with_stream(model)
    assert len(cached.stream["m0"]) == len(PackedTables.from_tables(train).index) < len(packed.index)
    entries = len(cached.stream["m0"])
    size = entries * sum(s.n_tokens for s in model.cfg.modalities) * 3 * model.cfg.d_model * 4  # bytes
    assert sum(x.numel() * x.element_size() for x in cached.stream.values()) == size
    assert packed.with_stream(model, max_bytes=size).stream  # fits exactly
    assert packed.with_stream(model, max_bytes=size - 1) is packed  # too large: the steps compute it instead
    rows = packed.sample(np.arange(len(packed)), 2, 4, np.random.default_rng(0))
    got = cached.gather(rows)
    raw = packed.gather(rows)
    flat = {m: x.flatten(0, 2) for m, x in raw.inputs.items()}
    present = {m: p.flatten(0, 2) for m, p in raw.present.items()}
    want = model.first_layer_stream(flat, present)
    assert set(got.stream) == set(want) and not got.inputs
    for m in want:
        assert torch.equal(got.present[m], raw.present[m])
        has = present[m]
        torch.testing.assert_close(got.stream[m].flatten(0, 2)[has], want[m][has], rtol=1e-5, atol=1e-6)
    assert torch.equal(got.labels, raw.labels)
