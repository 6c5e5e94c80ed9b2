"""Every device's table in one set of contiguous tensors, with vectorised minibatch sampling and gathering.

A :class:`PackedTables` holds U device tables as one :class:`~hffm_opt.learners.table.MultiModalTable`-like block:
the shared per-modality ``sources``, the rows of all devices one after the other (``index`` (R, M), ``labels``
(R, T)) and ``offsets`` (U + 1,), device ``u`` owning rows ``offsets[u]:offsets[u + 1]``. It is a read-only
sequence of tables (``packed[u]`` builds device ``u``'s :class:`MultiModalTable` on demand), so it can stand
wherever a tuple of device tables is expected, while the trainer works on the whole block at once:
:meth:`PackedTables.sample` draws the rows of every device's minibatches with one sort (no per-device Python
work) and :meth:`PackedTables.gather` turns them into :class:`DeviceBatches` (the minibatches of many devices for
many steps, what :func:`~hffm_opt.learners.local.local_train` trains on) on the tensors' device.
:meth:`PackedTables.with_stream` caches what the frozen first layer computes on each distinct row's modality
tokens, which the steps then gather instead of the inputs (the trainer does this when a run starts).
Units: row and element counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import torch
from torch import Tensor

from hffm_opt.errors import ConfigError

from .device import free_memory
from .specs import SpecNames
from .table import Batch, MultiModalTable


@dataclass(frozen=True, eq=False)
class DeviceBatches:
    """Minibatches of D devices for S steps: ``inputs[m]`` (D, S, B, *shape), ``present[m]`` (D, S, B) bool,
    ``labels`` (D, S, B, T) int64 (-1 = no label), and ``encoded[m]`` (D, S, B, n_tokens, d_model) for the
    modalities of pre-encoded tables (:meth:`MultiModalTable.with_encoded`), or, from tables with a cached stream
    (:meth:`PackedTables.with_stream`), ``stream[m]`` (D, S, B, n_tokens, 3 d_model) instead of both. A device
    lacking modality ``m`` has ``present[m]`` all False (and zeros in ``inputs[m]``, never used)."""

    inputs: dict[str, Tensor]
    present: dict[str, Tensor]
    labels: Tensor
    encoded: dict[str, Tensor] = field(default_factory=dict)
    stream: dict[str, Tensor] = field(default_factory=dict)

    @property
    def n_devices(self) -> int:
        """D, devices."""
        return int(self.labels.shape[0])

    @property
    def n_steps(self) -> int:
        """S, steps held."""
        return int(self.labels.shape[1])

    @property
    def batch_size(self) -> int:
        """B, samples per step."""
        return int(self.labels.shape[2])

    def step(self, d: int, s: int, modalities: Sequence[str] | None = None) -> Batch:
        """Device ``d``'s minibatch of step ``s`` as a :class:`Batch` (keys limited to ``modalities``)."""
        keys = list(self.present) if modalities is None else list(modalities)
        return Batch({m: self.inputs[m][d, s] for m in keys if m in self.inputs},
                     {m: self.present[m][d, s] for m in keys}, self.labels[d, s],
                     {m: self.encoded[m][d, s] for m in keys if m in self.encoded},
                     {m: self.stream[m][d, s] for m in keys if m in self.stream})

    def select(self, devices) -> "DeviceBatches":
        """The batches of a subset of devices (index array or tensor)."""
        idx = devices if isinstance(devices, Tensor) else torch.as_tensor(np.asarray(devices, dtype=np.int64))
        idx = idx.to(self.labels.device)
        return DeviceBatches({m: x[idx] for m, x in self.inputs.items()},
                             {m: p[idx] for m, p in self.present.items()}, self.labels[idx],
                             {m: x[idx] for m, x in self.encoded.items()}, {m: x[idx] for m, x in self.stream.items()})


class PackedTables(SpecNames, Sequence):
    """U device tables in contiguous tensors (see the module docstring).

    ``sources[m]`` (n_items_m, ...) shared by all devices; ``index`` (R, M) int64 (-1 = row lacks the modality);
    ``labels`` (R, T) int64 (-1 = no label); ``offsets`` (U + 1,) int64 row ranges (numpy, on the host);
    ``stream`` {m: (n_distinct, n_tokens, 3 d_model)} the cached first-layer stream of the distinct rows and
    ``stream_rows`` (R,) int64 each row's entry in it (:meth:`with_stream`; empty / None without a cache).
    """

    def __init__(self, name: str, modalities, tasks, sources: dict[str, Tensor], index: Tensor, labels: Tensor,
                 offsets, encoded: Sequence[str] = (), stream: dict[str, Tensor] | None = None,
                 stream_rows: Tensor | None = None):
        self.name = name
        self.modalities, self.tasks, self.encoded = tuple(modalities), tuple(tasks), tuple(encoded)
        self.sources, self.index, self.labels = dict(sources), index, labels
        self.stream, self.stream_rows = dict(stream or {}), stream_rows
        if bool(self.stream) != (stream_rows is not None) or (stream_rows is not None and
                                                              stream_rows.shape != (len(index),)):
            raise ConfigError(f"{name}: stream and stream_rows ({len(index)} rows) go together")
        self.offsets = np.asarray(offsets, dtype=np.int64)
        if self.offsets.ndim != 1 or self.offsets[0] != 0 or self.offsets[-1] != len(index) or \
                (np.diff(self.offsets) < 0).any():
            raise ConfigError(f"{name}.offsets: must rise from 0 to the {len(index)} rows")
        if index.shape != (len(index), len(self.modalities)) or labels.shape != (len(index), len(self.tasks)):
            raise ConfigError(f"{name}: index {tuple(index.shape)} / labels {tuple(labels.shape)} must be "
                             f"(rows, {len(self.modalities)}) / (rows, {len(self.tasks)})")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_tables(cls, tables: Iterable[MultiModalTable], name: str = "devices") -> "PackedTables":
        """Pack device tables (returned unchanged if already packed). Tables sharing their source tensors (the
        usual case: subsets of one pool) share them here too; other sources are concatenated."""
        if isinstance(tables, PackedTables):
            return tables
        tables = list(tables)
        if not tables:
            raise ConfigError("tables: need at least one device table")
        first = tables[0]
        for t in tables:
            if t.modality_names != first.modality_names or t.task_names != first.task_names or \
                    t.encoded != first.encoded:
                raise ConfigError(f"tables: {t.name} has other modalities, tasks or encoded modalities than "
                                 f"{first.name}")
        sources, shift = {}, np.zeros((len(tables), len(first.modalities)), np.int64)
        for j, m in enumerate(first.modality_names):
            seen: dict[int, int] = {}
            parts = []
            for u, t in enumerate(tables):
                src = t.sources[m]
                if id(src) not in seen:
                    seen[id(src)] = sum(len(p) for p in parts)
                    parts.append(src)
                shift[u, j] = seen[id(src)]
            sources[m] = parts[0] if len(parts) == 1 else torch.cat(parts)
        index = torch.cat([t.index for t in tables])
        lengths = np.array([len(t) for t in tables], np.int64)
        if shift.any():
            add = torch.from_numpy(np.repeat(shift, lengths, axis=0))
            index = torch.where(index >= 0, index + add, index)
        labels = torch.cat([t.labels for t in tables])
        return cls(name, first.modalities, first.tasks, sources, index, labels,
                   np.concatenate([[0], np.cumsum(lengths)]), first.encoded)

    def to(self, device) -> "PackedTables":
        """The same tables with every tensor on ``device``."""
        device = torch.device(device)
        if self.index.device == device:
            return self
        return PackedTables(self.name, self.modalities, self.tasks, {m: s.to(device) for m, s in self.sources.items()},
                            self.index.to(device), self.labels.to(device), self.offsets, self.encoded,
                            {m: x.to(device) for m, x in self.stream.items()},
                            None if self.stream_rows is None else self.stream_rows.to(device))

    @torch.no_grad()
    def with_stream(self, model, chunk: int = 4096, max_bytes: int | None = None) -> "PackedTables":
        """These tables with each distinct row's first-layer stream (:meth:`M3TModel.first_layer_stream`: the
        frozen first layer's work on the modality tokens, which every training step would otherwise compute
        again) computed once, ``chunk`` rows at a time, and cached: :meth:`gather` then returns it instead of the
        inputs. ``self`` (the steps compute it, the same result) when already cached, when the stream is not fixed
        (a trained encoder or backbone) or when the cache would take more than ``max_bytes`` (default: a quarter
        of the memory free on the tables' device, :func:`~hffm_opt.learners.device.free_memory`)."""
        if self.stream or not model.stream_is_fixed() or not len(self.index):
            return self
        distinct, rows = np.unique(self.index.cpu().numpy(), axis=0, return_inverse=True)
        mods = [m for j, m in enumerate(self.modality_names) if (distinct[:, j] >= 0).any()]
        dev = self.index.device
        tokens = sum(spec.n_tokens for spec in model.cfg.modalities if spec.name in mods)
        need = len(distinct) * tokens * 3 * model.cfg.d_model * 4  # float32
        if need > (free_memory(dev) // 4 if max_bytes is None else max_bytes):
            return self
        parts: dict[str, list[Tensor]] = {m: [] for m in mods}
        for s in range(0, len(distinct), chunk):
            inputs, present, encoded = self._columns(torch.from_numpy(distinct[s:s + chunk]).to(dev), mods)
            for m, x in model.first_layer_stream(inputs, present, encoded).items():
                parts[m].append(x)
        return PackedTables(self.name, self.modalities, self.tasks, self.sources, self.index, self.labels,
                            self.offsets, self.encoded, {m: torch.cat(x) for m, x in parts.items()},
                            torch.from_numpy(rows.reshape(-1)).to(dev))

    # ------------------------------------------------------------------ the sequence of tables
    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, u):
        if isinstance(u, slice):
            return self.select(np.arange(len(self))[u])
        u = int(u)
        if not -len(self) <= u < len(self):
            raise IndexError(f"device {u}: {len(self)} devices")
        u %= len(self)
        a, b = int(self.offsets[u]), int(self.offsets[u + 1])
        return MultiModalTable(f"{self.name}/dev{u}", self.modalities, self.tasks, self.sources, self.index[a:b],
                               self.labels[a:b], self.encoded)

    def select(self, devices) -> "PackedTables":
        """The tables of ``devices`` (index array), in that order."""
        devices = np.asarray(devices, np.int64)
        rows = self.rows_of(devices)
        lengths = self.row_counts()[devices]
        r = torch.from_numpy(rows).to(self.index.device)
        return PackedTables(self.name, self.modalities, self.tasks, self.sources, self.index[r], self.labels[r],
                            np.concatenate([[0], np.cumsum(lengths)]), self.encoded, self.stream,
                            None if self.stream_rows is None else self.stream_rows[r])

    # ------------------------------------------------------------------ per-device summaries (numpy, host)
    def row_counts(self) -> np.ndarray:
        """(U,) rows of each device."""
        return np.diff(self.offsets)

    def device_of_rows(self) -> np.ndarray:
        """(R,) the device owning each row."""
        return np.repeat(np.arange(len(self)), self.row_counts())

    def rows_of(self, devices) -> np.ndarray:
        """The row numbers of ``devices``, device after device."""
        devices = np.asarray(devices, np.int64)
        lengths = self.row_counts()[devices]
        starts = np.repeat(self.offsets[devices] - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
        return np.arange(int(lengths.sum()), dtype=np.int64) + starts

    def _per_device(self, flags: Tensor) -> np.ndarray:
        """(U, C) sums of the (R, C) ``flags`` over each device's rows."""
        cum = np.concatenate([np.zeros((1, flags.shape[1]), np.int64),
                              np.cumsum(flags.cpu().numpy().astype(np.int64), axis=0)])
        return cum[self.offsets[1:]] - cum[self.offsets[:-1]]

    def label_counts(self) -> np.ndarray:
        """(U, T) rows of each device labelled for each task (the scenario's ``n_{u,t}``)."""
        return self._per_device(self.labels >= 0)

    def modality_counts(self) -> np.ndarray:
        """(U, M) rows of each device having each modality."""
        return self._per_device(self.index >= 0)

    # ------------------------------------------------------------------ minibatches
    def sample(self, devices, steps: int, batch_size: int, rng: np.random.Generator) -> np.ndarray:
        """(D, steps, batch_size) row numbers of the minibatches of ``devices``: each device's rows drawn without
        replacement, reshuffled pass after pass when it has fewer than ``steps * batch_size`` rows. One draw of
        random keys and one sort for all devices; the result depends only on the inputs and ``rng``'s state."""
        devices = np.asarray(devices, np.int64)
        if steps < 1 or batch_size < 1:
            raise ConfigError(f"steps = {steps}, batch_size = {batch_size}: both must be >= 1")
        n = self.row_counts()[devices]
        if (n == 0).any():
            u = int(devices[np.argmax(n == 0)])
            raise ConfigError(f"device {u} ({self.name}) has no rows: a device without data cannot train")
        need = steps * batch_size
        reps = -(-need // n)  # passes through its rows each device needs
        sizes = np.repeat(n, reps)  # one group per (device, pass)
        group = np.repeat(np.arange(len(sizes)), sizes)
        order = np.argsort(group + rng.random(len(group)), kind="stable")  # a permutation inside every group
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        local = order - starts[group]  # position of each drawn row in its device's rows
        block = np.concatenate([[0], np.cumsum(n * reps)[:-1]])  # where each device's passes start
        take = block[:, None] + np.arange(need)[None, :]
        rows = self.offsets[devices][:, None] + local[take]
        return rows.reshape(len(devices), steps, batch_size)

    def gather(self, rows, modalities: Sequence[str] | None = None):
        """:class:`DeviceBatches` of ``rows`` (D, S, B) on the tensors' device (the cached stream instead of the
        inputs when there is one, :meth:`with_stream`).
        ``modalities`` fixes the keys (default: those some drawn row has); absent entries hold zeros."""
        dev = self.index.device
        rows = torch.as_tensor(np.asarray(rows, np.int64)).to(dev)
        shape = tuple(rows.shape)
        flat = rows.reshape(-1)
        if self.stream:
            keep = [m for m in self.stream if modalities is None or m in modalities]
            present = {m: (self.index[flat, self.modality_names.index(m)] >= 0) for m in keep}
            if modalities is None:
                keep = [m for m in keep if bool(present[m].any())]
            srows = self.stream_rows[flat]
            stream = {m: self.stream[m][srows].reshape(*shape, *self.stream[m].shape[1:]) for m in keep}
            return DeviceBatches({}, {m: present[m].reshape(shape) for m in keep},
                                 self.labels[flat].reshape(*shape, -1), stream=stream)
        inputs, present, encoded = self._columns(self.index[flat], modalities)

        def lead(xs: dict[str, Tensor]) -> dict[str, Tensor]:
            return {m: x.reshape(*shape, *x.shape[1:]) for m, x in xs.items()}

        return DeviceBatches(lead(inputs), lead(present), self.labels[flat].reshape(*shape, -1), lead(encoded))

    def _columns(self, idx: Tensor, modalities: Sequence[str] | None):
        """(inputs, present, encoded) of the rows whose item indices are ``idx`` (N, M), as flat (N, ...) tensors;
        ``modalities`` as in :meth:`gather`."""
        inputs, present, encoded = {}, {}, {}
        for j, m in enumerate(self.modality_names):
            if modalities is not None and m not in modalities:
                continue
            col = idx[:, j]
            has = col >= 0
            if modalities is None and not bool(has.any()):
                continue
            x = self.sources[m][col.clamp(min=0)]
            x = x * has.view(-1, *([1] * (x.dim() - 1))).to(x.dtype)  # placeholder zeros, masked by present
            (encoded if m in self.encoded else inputs)[m] = x
            present[m] = has
        return inputs, present, encoded

    def __repr__(self):
        return f"PackedTables({self.name!r}, devices={len(self)}, rows={len(self.index)})"
