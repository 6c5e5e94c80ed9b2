"""The non-IID partition: Dirichlet splits, device parts and tables, sample counts, feasible tasks."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hffm_opt.learners.partitioning import (
    device_tables,
    dirichlet_split,
    feasible_tasks,
    partition,
    sample_counts,
)
from hffm_opt.learners.specs import ModalitySpec, TaskSpec
from hffm_opt.learners.table import MultiModalTable


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 300), parts=st.integers(1, 12), n_classes=st.integers(1, 6),
       alpha=st.floats(0.05, 10.0), seed=st.integers(0, 2**32 - 1))
def test_dirichlet_split_conserves_and_is_deterministic(n, parts, n_classes, alpha, seed):
    labels = np.random.default_rng(seed).integers(0, n_classes, n)
    a = dirichlet_split(labels, parts, alpha, np.random.default_rng(seed))
    b = dirichlet_split(labels, parts, alpha, np.random.default_rng(seed))
    assert len(a) == parts
    assert np.array_equal(np.sort(np.concatenate(a)), np.arange(n))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_dirichlet_small_alpha_is_skewed():
    labels = np.repeat(np.arange(10), 200)
    rng = np.random.default_rng(0)
    skew = [np.bincount(labels[p], minlength=10).max() / max(len(p), 1)
            for p in dirichlet_split(labels, 10, 0.05, rng) if len(p)]
    flat = [np.bincount(labels[p], minlength=10).max() / len(p) for p in dirichlet_split(labels, 10, 100.0, rng)]
    assert np.mean(skew) > 0.6 > 0.2 > np.mean(flat)
    parts = dirichlet_split(labels, 10, 0.05, np.random.default_rng(1), min_size=20)
    assert min(len(p) for p in parts) >= 20


def _toy_table():
    mods = (ModalitySpec("a", "vector", (2,)), ModalitySpec("b", "vector", (3,)))
    tasks = (TaskSpec("both", 2, ("a", "b")), TaskSpec("ta", 3, ("a",)), TaskSpec("any", 2))
    rng = np.random.default_rng(0)
    n = 400
    index = np.stack([np.arange(n), np.arange(n)], 1)
    index[::5, 1] = -1  # some rows lack b
    labels = np.stack([rng.integers(0, 2, n), rng.integers(0, 3, n), rng.integers(0, 2, n)], 1)
    labels[::7, 0] = -1
    return MultiModalTable("toy", mods, tasks, {"a": torch.randn(n, 2), "b": torch.randn(n, 3)}, index, labels)


def test_partition_conserves_rows_and_respects_device_sets():
    table = _toy_table()
    mods = np.array([[1, 0], [1, 1], [0, 1], [1, 1], [1, 0]], bool)
    tasks = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1], [1, 1, 1], [1, 0, 0]], bool)  # device 4: 'both' without b
    p = partition(table, mods, tasks, alpha=0.3, test_fraction=0.25, seed=5)
    every = np.concatenate(list(p.train) + list(p.test) + [p.unassigned])
    assert np.array_equal(np.sort(every), np.arange(len(table)))  # each row exactly once
    q = partition(table, mods, tasks, alpha=0.3, test_fraction=0.25, seed=5)
    assert all(np.array_equal(x, y) for x, y in zip(p.train + p.test, q.train + q.test))
    r = partition(table, mods, tasks, alpha=0.3, test_fraction=0.25, seed=6)
    assert not all(np.array_equal(x, y) for x, y in zip(p.train, r.train))
    assert len(p.train[4]) == 0 and len(p.test[4]) == 0  # it can use nothing
    train, test = device_tables(table, p, mods, tasks)
    counts = sample_counts(train)
    assert counts.shape == (5, 3)
    assert (counts[~tasks] == 0).all()
    for u, t in enumerate(train):
        assert not t.present.numpy()[:, ~mods[u]].any()  # modalities it lacks are gone
        assert t.present.any(1).all() and (t.labels >= 0).any(1).all()
    # 'both' labels survive only on rows that have both modalities
    t1 = train[1]
    assert t1.present[t1.labels[:, 0] >= 0].all()
    assert sum(len(x) for x in test) > 0


def test_partition_rejects_bad_shapes():
    with pytest.raises(ValueError):
        partition(_toy_table(), np.ones((2, 3), bool), np.ones((2, 3), bool))


def test_feasible_tasks_drop_what_the_modalities_cannot_serve():
    table = _toy_table()
    mods = np.array([[1, 0], [0, 1], [1, 1]], bool)
    tasks = np.ones((3, 3), bool)
    ok = feasible_tasks(table.tasks, table.modality_names, mods, tasks)
    assert ok.tolist() == [[False, True, True], [False, False, True], [True, True, True]]
    p = partition(table, mods, ok, seed=0)
    train, _ = device_tables(table, p, mods, ok)
    assert (sample_counts(train).sum(axis=1) > 0).all()
