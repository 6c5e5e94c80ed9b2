"""Accuracy of many models of one architecture at once: the trainer's cluster models on the global test set (or the
validation set), each device's cluster model on its own test rows, and the accuracy each device is served.

The models differ only in their trainable parameters, stacked ``{name: (C, *shape)}`` like the trainer's
cluster copies; one ``torch.func.vmap`` over the models runs each batch of rows through all of them.
Rows are grouped by the tasks they are labelled for and each group runs only those tasks' prompts: the model's
masks make a task's prediction independent of the other tasks in the sequence, so this is exact and shorter.
:func:`served_accuracy` turns the cluster models' per-task accuracies into what the devices get: device ``u``
is served by its cluster's model, scored on the tasks it runs.
Units: fractions in [0, 1] (NaN for a task without a labelled row).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor
from torch.func import functional_call, vmap

from .model import M3TModel
from .packed import PackedTables
from .table import MultiModalTable

ROWS_PER_CALL = 16384  # models x rows of one vmapped forward pass (bounds the activations' memory)


@torch.no_grad()
def correct(model: M3TModel, params: Mapping[str, Tensor], table: MultiModalTable, batch_size: int = 2048
            ) -> tuple[np.ndarray, np.ndarray]:
    """(C, N, T) bool: model c's prediction of row n for task t is right; (N, T) bool: row n is labelled for t.

    ``params`` {name: (C, *shape)} the models' own parameters (the others are ``model``'s), on the device of
    ``model`` and ``table``."""
    n_models = int(next(iter(params.values())).shape[0]) if params else 1
    labelled = (table.labels >= 0).cpu().numpy()
    ok = np.zeros((n_models,) + labelled.shape, bool)
    if not len(table):
        return ok, labelled
    per_call = max(1, ROWS_PER_CALL // max(1, min(batch_size, len(table))))
    keys, inverse = np.unique(labelled, axis=0, return_inverse=True)
    for g, key in enumerate(keys):
        cols = np.flatnonzero(key)
        if not cols.size:
            continue
        rows = np.flatnonzero(inverse.reshape(-1) == g)
        tasks = tuple(model.task_names[j] for j in cols)
        cols_t = torch.from_numpy(cols).to(table.labels.device)
        for start in range(0, len(rows), batch_size):
            part = rows[start:start + batch_size]
            b = table.batch(part)
            args, kwargs = (b.inputs, b.present), {"tasks": tasks, "encoded": b.encoded or None}

            def logits(p):
                out = functional_call(model, p, args, kwargs, strict=False)
                return torch.stack([out.logits[t].argmax(-1) for t in tasks], dim=-1)

            want = b.labels[:, cols_t]
            for c in range(0, n_models, per_call):
                chunk = {n: x[c:c + per_call] for n, x in params.items()}
                pred = vmap(logits)(chunk) if params else logits({})[None]
                ok[c:c + per_call, part[:, None], cols[None, :]] = (pred == want).cpu().numpy()
    return ok, labelled


def seeded_rows(n: int, k: int, seed) -> np.ndarray:
    """A seeded random subset of ``k`` of the rows ``0..n-1``, sorted (all of them when ``k`` is 0 or >= ``n``);
    ``seed`` is anything :func:`numpy.random.default_rng` takes."""
    if not 0 < k < n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, k, replace=False))


def accuracy(ok: np.ndarray, labelled: np.ndarray) -> np.ndarray:
    """(C, T) fraction of the labelled rows each model gets right (NaN where no row is labelled)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return ok.sum(axis=1) / labelled.sum(axis=0)


def distinct(stacked: Mapping[str, Tensor]) -> tuple[np.ndarray, np.ndarray]:
    """(first index of each distinct copy, (C,) which distinct copy each of C stacked copies is): identical
    cluster models (e.g. right after a cloud aggregation) are evaluated once."""
    flat = torch.cat([x.reshape(x.shape[0], -1) for x in stacked.values()], dim=1)
    _, inverse = torch.unique(flat, dim=0, return_inverse=True)
    inverse = inverse.cpu().numpy()
    _, first, inv = np.unique(inverse, return_index=True, return_inverse=True)
    order = np.argsort(first)  # keep the first-seen order
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return first[order], rank[inv.reshape(-1)]


def device_accuracy(model: M3TModel, stacked: Mapping[str, Tensor], home: np.ndarray, tests: PackedTables,
                    batch_size: int = 2048) -> np.ndarray:
    """(U,) accuracy of each device's cluster model (``stacked[n][home[u]]``) on its own test rows, mean over
    the tasks it has labelled rows for (NaN for a device without test rows). One pass per cluster."""
    out = np.full(len(tests), np.nan)
    counts = tests.row_counts()
    owner = tests.device_of_rows()
    for e in np.unique(home[counts > 0]):
        members = np.flatnonzero((home == e) & (counts > 0))
        rows = tests.rows_of(members)
        r = torch.from_numpy(rows).to(tests.index.device)
        table = MultiModalTable(f"{tests.name}/cluster{e}", tests.modalities, tests.tasks, tests.sources,
                                tests.index[r], tests.labels[r], tests.encoded)
        ok, labelled = correct(model, {n: x[e:e + 1] for n, x in stacked.items()}, table, batch_size)
        local = np.searchsorted(members, owner[rows])  # member position of each row
        n_ok = np.zeros((len(members), labelled.shape[1]))
        n_lab = np.zeros_like(n_ok)
        np.add.at(n_ok, local, ok[0])
        np.add.at(n_lab, local, labelled)
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = np.where(n_lab > 0, n_ok / np.maximum(n_lab, 1), np.nan)
        out[members] = np.nanmean(frac, axis=1)
    return out


def served_accuracy(acc: np.ndarray, home: np.ndarray, runs: np.ndarray) -> tuple[float, np.ndarray]:
    """The accuracy each device is served: ``acc`` (C, T) each cluster model's accuracy per task (NaN = no
    labelled row), ``home`` (U,) the cluster serving each device, ``runs`` (U, T) bool the tasks each device runs.

    Returns (the mean over devices of their mean over the tasks they run, NaN if no device has a scored task;
    (T,) per task the mean over the devices running it, NaN where none). A task without a labelled row is not
    scored. Vectorised over devices."""
    per = acc[home]  # (U, T): device u's serving model on task t
    scored = np.asarray(runs, bool) & np.isfinite(per)
    values = np.where(scored, per, 0.0)
    n_task, n_dev = scored.sum(axis=0), scored.sum(axis=1)
    by_task = np.where(n_task > 0, values.sum(axis=0) / np.maximum(n_task, 1), np.nan)
    has = n_dev > 0
    overall = float(np.mean(values.sum(axis=1)[has] / n_dev[has])) if has.any() else float("nan")
    return overall, by_task
