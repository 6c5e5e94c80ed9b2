"""The non-IID partition of a benchmark's device pool across the devices of a scenario.

:func:`partition`: rows are split across devices by a per-class Dirichlet draw (:func:`dirichlet_split`;
label-skewed, non-IID, seeded) among the devices that can use them (device has one of the row's labelled tasks
and the modalities that task requires); then each device's rows are split into its own train and test part.
Every row ends up in exactly one place (one device's train or test part, or ``unassigned`` when no device can
use it). :func:`device_tables` restricts each device's rows to its modalities and tasks, :func:`sample_counts`
gives the scenario's ``n_{u,t}`` and :func:`feasible_tasks` the tasks a device's modalities can serve.
Units: row counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from hffm_opt.errors import ConfigError

from .packed import PackedTables
from .specs import TaskSpec
from .table import MultiModalTable, _usable


def dirichlet_split(labels, n_parts: int, alpha: float, rng: np.random.Generator, min_size: int = 0,
                    max_tries: int = 100) -> list[np.ndarray]:
    """Split positions ``0..len(labels)-1`` into ``n_parts`` disjoint parts, class by class, with shares drawn
    from Dirichlet(``alpha``): small ``alpha`` = each part dominated by few classes. Redraws (up to
    ``max_tries``) until every part has at least ``min_size`` positions, then keeps the last draw. Every position
    is in exactly one part; the result depends only on the inputs and the generator's state."""
    labels = np.asarray(labels)
    if n_parts < 1:
        raise ConfigError(f"n_parts = {n_parts}: must be >= 1")
    if not alpha > 0:
        raise ConfigError(f"alpha = {alpha}: must be > 0")
    classes = np.unique(labels)
    owner = np.zeros(len(labels), np.int64)
    for _ in range(max(1, max_tries)):
        for c in classes:
            pos = rng.permutation(np.flatnonzero(labels == c))
            share = rng.dirichlet(np.full(n_parts, alpha))
            cuts = np.floor(np.cumsum(share)[:-1] * len(pos)).astype(np.int64)
            owner[pos] = np.searchsorted(cuts, np.arange(len(pos)), side="right")  # part p gets cuts[p-1]:cuts[p]
        sizes = np.bincount(owner, minlength=n_parts)
        if sizes.min() >= min_size:
            break
    order = np.argsort(owner, kind="stable")  # positions in increasing order within each part
    return np.split(order, np.cumsum(sizes)[:-1])


@dataclass(frozen=True, eq=False)
class Partition:
    """Row indices (into the partitioned table) of each device's ``train`` and ``test`` part, and the rows no
    device can use (``unassigned``)."""

    train: tuple[np.ndarray, ...]
    test: tuple[np.ndarray, ...]
    unassigned: np.ndarray

    @property
    def n_devices(self) -> int:
        """Number of devices U."""
        return len(self.train)


def _eligible(table: MultiModalTable, modalities: np.ndarray, tasks: np.ndarray) -> np.ndarray:
    """(N, U) bool: device u can use row r (some labelled task of r is a task of u and r, seen with u's
    modalities, has what that task requires)."""
    present = table.present.numpy()
    labelled = (table.labels >= 0).numpy()
    names = table.modality_names
    seen_any = (present.astype(np.int64) @ modalities.T.astype(np.int64)) > 0  # (N, U)
    out = np.zeros((len(table), len(modalities)), bool)
    for j, t in enumerate(table.tasks):
        ok = labelled[:, j, None] & tasks[None, :, j] & seen_any
        for r in t.requires:
            k = names.index(r)
            ok &= present[:, k, None] & modalities[None, :, k]
        out |= ok
    return out


def feasible_tasks(tasks_spec: Sequence[TaskSpec], modality_names: Sequence[str], modalities, tasks) -> np.ndarray:
    """(U, T) bool: the tasks of ``tasks`` (U, T) each device can run with its ``modalities`` (U, M), i.e. it has
    every modality the task requires (and at least one modality). A scenario whose task sets were drawn
    independently of the modality sets (an image-only device asked to answer questions) can be repaired with
    it before partitioning; a device left without a feasible task gets no data."""
    modalities = np.asarray(modalities, bool)
    out = np.array(tasks, dtype=bool, copy=True)
    names = list(modality_names)
    out &= modalities.any(axis=1, keepdims=True)
    for j, t in enumerate(tasks_spec):
        for r in t.requires:
            out[:, j] &= modalities[:, names.index(r)]
    return out


def partition(table: MultiModalTable, modalities, tasks, alpha: float = 0.5, test_fraction: float = 0.2,
              seed: int = 0, min_size: int = 0) -> Partition:
    """Non-IID partition of ``table``'s rows across devices with modality sets ``modalities`` (U, M) bool and
    task sets ``tasks`` (U, T) bool (the scenario's M_u and T_u).

    Rows are grouped by the set of devices that can use them; each group is split by
    :func:`dirichlet_split` (``alpha``, ``min_size``) among those devices, over the classes of the group's first
    labelled task. Each device's rows are then shuffled and ``test_fraction`` of them (rounded down) become its
    test part. Every row lands in exactly one device part or in ``unassigned``; the same seed gives the same
    partition."""
    modalities = np.asarray(modalities, bool)
    tasks = np.asarray(tasks, bool)
    n_dev = len(modalities)
    if modalities.shape != (n_dev, len(table.modalities)) or tasks.shape != (n_dev, len(table.tasks)):
        raise ConfigError(f"modalities {modalities.shape} / tasks {tasks.shape}: must be (U, {len(table.modalities)}) "
                         f"and (U, {len(table.tasks)})")
    if not 0.0 <= test_fraction < 1.0:
        raise ConfigError(f"test_fraction = {test_fraction}: must be in [0, 1)")
    rng = np.random.default_rng(seed)
    # devices of one profile (modality set, task set) can use the same rows: eligibility per profile, the
    # profiles in the order of their first device (which orders the groups as the device columns would)
    profiles, first, dev_profile = np.unique(np.concatenate([modalities, tasks], axis=1), axis=0, return_index=True,
                                             return_inverse=True)
    order = np.argsort(first)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    n_mod = modalities.shape[1]
    elig = _eligible(table, profiles[order, :n_mod].astype(bool), profiles[order, n_mod:].astype(bool))  # (N, P)
    dev_col = rank[dev_profile.reshape(-1)]
    labels = table.labels.numpy()
    labelled = labels >= 0
    first_task = np.where(labelled.any(axis=1), labelled.argmax(axis=1), -1)
    # group rows by (who can use them, which task splits them)
    key = np.concatenate([elig, first_task[:, None] + 1], axis=1)
    groups, inverse = np.unique(key, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    n_prof = len(profiles)
    per_dev: list[list[np.ndarray]] = [[] for _ in range(n_dev)]
    unassigned = []
    for g, gkey in enumerate(groups):
        rows = np.flatnonzero(inverse == g)
        devs = np.flatnonzero(gkey[:n_prof][dev_col])
        if len(devs) == 0 or gkey[-1] == 0:
            unassigned.append(rows)
            continue
        split_labels = labels[rows, gkey[-1] - 1]
        for d, part in zip(devs, dirichlet_split(split_labels, len(devs), alpha, rng, min_size=min_size)):
            per_dev[d].append(rows[part])
    train, test = [], []
    for u in range(n_dev):
        rows = np.concatenate(per_dev[u]) if per_dev[u] else np.empty(0, np.int64)
        rows = rng.permutation(np.sort(rows))
        n_test = int(np.floor(test_fraction * len(rows)))
        test.append(np.sort(rows[:n_test]))
        train.append(np.sort(rows[n_test:]))
    un = np.sort(np.concatenate(unassigned)) if unassigned else np.empty(0, np.int64)
    return Partition(tuple(train), tuple(test), un)


def device_tables(table: MultiModalTable, part: Partition, modalities, tasks
                  ) -> tuple[list[MultiModalTable], list[MultiModalTable]]:
    """Each device's train and test table, restricted to its modalities and tasks (:meth:`MultiModalTable.restrict`)."""
    modalities = np.asarray(modalities, bool)
    tasks = np.asarray(tasks, bool)
    train = [table.subset(r, f"{table.name}/dev{u}/train").restrict(modalities[u], tasks[u])
             for u, r in enumerate(part.train)]
    test = [table.subset(r, f"{table.name}/dev{u}/test").restrict(modalities[u], tasks[u])
            for u, r in enumerate(part.test)]
    return train, test


def packed_device_tables(table: MultiModalTable, part: Partition, modalities, tasks
                         ) -> tuple[PackedTables, PackedTables]:
    """:func:`device_tables` for every device at once, as two :class:`PackedTables` (train, test): the same rows
    and labels, without one table object per device (what large scenarios need)."""
    modalities = np.asarray(modalities, bool)
    tasks = np.asarray(tasks, bool)

    def pack(parts, kind):
        lengths = np.array([len(r) for r in parts], np.int64)
        rows = torch.from_numpy(np.concatenate([np.zeros(0, np.int64), *parts]).astype(np.int64))
        dev = np.repeat(np.arange(len(parts)), lengths)
        index, labels = table.index[rows].clone(), table.labels[rows].clone()
        index[~torch.from_numpy(modalities[dev])] = -1
        labels[~torch.from_numpy(tasks[dev])] = -1
        labels[~_usable(index >= 0, table.modalities, table.tasks)] = -1
        keep = ((index >= 0).any(1) & (labels >= 0).any(1)).numpy()
        counts = np.bincount(dev[keep], minlength=len(parts))
        return PackedTables(f"{table.name}/{kind}", table.modalities, table.tasks, table.sources,
                            index[torch.from_numpy(keep)], labels[torch.from_numpy(keep)],
                            np.concatenate([[0], np.cumsum(counts)]), table.encoded)

    return pack(part.train, "train"), pack(part.test, "test")


def sample_counts(tables: Sequence[MultiModalTable]) -> np.ndarray:
    """(U, T) int: labelled samples per device and task, the scenario's ``n_{u,t}``."""
    return np.stack([t.label_counts() for t in tables]).astype(np.int64)
