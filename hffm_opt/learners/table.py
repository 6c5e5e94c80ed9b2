"""The offline multi-modal multi-task data table and its batches.

A :class:`MultiModalTable` is a torch ``Dataset`` of *rows*. Each modality keeps one source tensor of distinct
items (the 4,000 easy-VQA images, the 107 question embeddings, ...) and each row points into the sources it has
(``index[row, m] = -1`` = the row lacks modality ``m``) and carries one label per task (``-1`` = no label for
that task). ``table[i]`` yields ``({modality: tensor}, {task: int})`` with only the modalities the row has.
:meth:`MultiModalTable.batch` collates rows into a :class:`Batch`; :meth:`MultiModalTable.restrict` shows the rows
as a device with some modalities and tasks sees them; :meth:`MultiModalTable.with_encoded` replaces the sources
of frozen encoders by their tokens, computed once per item, which makes training several times cheaper without
changing its result. Units: none (element counts; labels are class indices).
"""

from __future__ import annotations

from typing import Mapping, NamedTuple, Protocol, Sequence, runtime_checkable

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from hffm_opt.errors import ConfigError

from .specs import ModalitySpec, SpecNames, TaskSpec


@runtime_checkable
class MultiModalDataset(Protocol):
    """What the learners need of a data set: a map-style dataset whose item ``i`` is
    ``({modality: tensor}, {task: label})`` (only the modalities the sample has; label -1 = no label)."""

    modalities: tuple[ModalitySpec, ...]
    tasks: tuple[TaskSpec, ...]

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> tuple[dict[str, Tensor], dict[str, int]]: ...


class Batch(NamedTuple):
    """A collated batch: ``inputs[m]`` (B, *shape), ``present[m]`` (B,) bool, ``labels`` (B, T) int64,
    ``encoded[m]`` (B, n_tokens, d_model) for the modalities of a pre-encoded table (then not in ``inputs``), and
    ``stream[m]`` (B, n_tokens, 3 d_model), the rows' cached first-layer stream
    (:meth:`~hffm_opt.learners.packed.PackedTables.with_stream`; then neither inputs nor encoded tokens are needed).

    Rows lacking modality ``m`` hold zeros in ``inputs[m]`` that the model masks out of attention
    (``present[m]`` False); a modality no row has is left out of ``inputs`` altogether."""

    inputs: dict[str, Tensor]
    present: dict[str, Tensor]
    labels: Tensor
    encoded: dict[str, Tensor] | None = None
    stream: dict[str, Tensor] | None = None

    def model_kwargs(self) -> dict:
        """Keyword arguments of :meth:`M3TModel.forward` for this batch (inputs, present, encoded; stream if cached)."""
        kwargs = {"inputs": self.inputs, "present": self.present, "encoded": self.encoded or None}
        return {**kwargs, "stream": self.stream} if self.stream else kwargs


class MultiModalTable(SpecNames, Dataset):
    """Rows pointing into per-modality source tensors, with one label per task (see the module docstring).

    ``sources[m]`` (n_items_m, *shape); ``index`` (N, M) int64 row -> item of each modality (-1 = absent);
    ``labels`` (N, T) int64 (-1 = no label). Subsets share the sources (no copy of images).
    """

    def __init__(self, name: str, modalities: Sequence[ModalitySpec], tasks: Sequence[TaskSpec],
                 sources: Mapping[str, Tensor], index, labels, encoded: Sequence[str] = ()):
        self.name = name
        self.modalities = tuple(modalities)
        self.tasks = tuple(tasks)
        self.encoded = tuple(encoded)
        self.sources = {m.name: torch.as_tensor(sources[m.name]) for m in self.modalities}
        self.index = _int64(index)
        self.labels = _int64(labels)
        n, n_m, n_t = len(self.index), len(self.modalities), len(self.tasks)
        if self.index.shape != (n, n_m):
            raise ConfigError(f"{name}.index.shape = {tuple(self.index.shape)}: must be (rows, {n_m} modalities)")
        if self.labels.shape != (n, n_t):
            raise ConfigError(f"{name}.labels.shape = {tuple(self.labels.shape)}: must be ({n}, {n_t} tasks)")
        for j, m in enumerate(self.modalities):
            src = self.sources[m.name]
            if m.name in self.encoded:
                if src.dim() != 3 or src.shape[1] != m.n_tokens:
                    raise ConfigError(f"{name}.sources[{m.name}].shape = {tuple(src.shape)}: pre-encoded items must be "
                                     f"(n, {m.n_tokens} tokens, d_model)")
            elif tuple(src.shape[1:]) != m.shape:
                raise ConfigError(f"{name}.sources[{m.name}].shape = {tuple(src.shape)}: items must be {m.shape}")
            col = self.index[:, j]
            if n and (col.max() >= len(src) or col.min() < -1):
                raise ConfigError(f"{name}.index[:, {m.name}]: entries must be -1 or < {len(src)}")
        for j, t in enumerate(self.tasks):
            col = self.labels[:, j]
            if n and (col.max() >= t.n_classes or col.min() < -1):
                raise ConfigError(f"{name}.labels[:, {t.name}]: labels must be -1 or in 0..{t.n_classes - 1}")

    # -- Dataset protocol
    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[dict[str, Tensor], dict[str, int]]:
        idx = self.index[i]
        x = {m.name: self.sources[m.name][int(idx[j])] for j, m in enumerate(self.modalities) if idx[j] >= 0}
        y = {t.name: int(self.labels[i, j]) for j, t in enumerate(self.tasks)}
        return x, y

    # -- views
    @property
    def present(self) -> Tensor:
        """(N, M) bool: which modalities each row has."""
        return self.index >= 0

    def has_modalities(self) -> np.ndarray:
        """(M,) bool: modalities at least one row has."""
        return self.present.any(dim=0).cpu().numpy()

    def label_counts(self) -> np.ndarray:
        """(T,) number of rows labelled for each task."""
        return (self.labels >= 0).sum(dim=0).cpu().numpy()

    def subset(self, rows, name: str | None = None) -> "MultiModalTable":
        """The given rows (index array), sharing the sources."""
        rows = _int64(rows).to(self.index.device)
        return MultiModalTable(name or self.name, self.modalities, self.tasks, self.sources, self.index[rows],
                               self.labels[rows], self.encoded)

    def restrict(self, modalities=None, tasks=None, name: str | None = None) -> "MultiModalTable":
        """The rows as a device with modality set ``modalities`` ((M,) bool) and task set ``tasks`` ((T,) bool)
        sees them: other modalities removed, labels of other tasks and of tasks whose required modalities the
        row no longer has set to -1, rows left with no modality or no label dropped."""
        index, labels = self.index.clone(), self.labels.clone()
        if modalities is not None:
            keep_m = torch.from_numpy(np.array(modalities, dtype=bool))
            index[:, ~keep_m] = -1
        if tasks is not None:
            keep_t = torch.from_numpy(np.array(tasks, dtype=bool))
            labels[:, ~keep_t] = -1
        labels[~_usable(index >= 0, self.modalities, self.tasks)] = -1
        rows = ((index >= 0).any(1) & (labels >= 0).any(1)).nonzero().flatten()
        return MultiModalTable(name or self.name, self.modalities, self.tasks, self.sources, index[rows],
                               labels[rows], self.encoded)

    def batch(self, rows, modalities: Sequence[str] | None = None) -> Batch:
        """Collate rows (on the table's device). ``modalities`` fixes which keys ``inputs`` has (default: those
        some row has)."""
        rows = _int64(rows).to(self.index.device)
        idx = self.index[rows]
        inputs, present, encoded = {}, {}, {}
        for j, m in enumerate(self.modalities):
            col = idx[:, j]
            has = col >= 0
            if modalities is None and not bool(has.any()):
                continue
            if modalities is not None and m.name not in modalities:
                continue
            src = self.sources[m.name]
            x = src[col.clamp(min=0)]
            if not bool(has.all()):
                x = x * has.view(-1, *([1] * (x.dim() - 1))).to(x.dtype)  # placeholder zeros, masked by present
            (encoded if m.name in self.encoded else inputs)[m.name] = x
            present[m.name] = has
        return Batch(inputs, present, self.labels[rows], encoded)

    @torch.no_grad()
    def with_encoded(self, model, modalities: Sequence[str] | None = None, chunk: int = 512) -> "MultiModalTable":
        """The same rows with the sources of ``modalities`` (default: every modality whose encoder is frozen in
        ``model``) replaced by that encoder's tokens, computed once per distinct item. Valid as long as those
        encoders do not change: a frozen encoder's output is a fixed function of its input, so training and
        evaluation on the result are exactly those on the raw table, without re-running the encoder."""
        if modalities is None:
            modalities = [m for m in self.modality_names if model.is_frozen(f"encoder:{m}")]
        sources = dict(self.sources)
        for m in modalities:
            if m in self.encoded:
                continue
            if not model.is_frozen(f"encoder:{m}"):
                raise ConfigError(f"modalities: encoder:{m} is trainable, its tokens cannot be cached")
            src = self.sources[m]
            enc = model.encoders[m]
            sources[m] = torch.cat([enc(src[i:i + chunk]) for i in range(0, len(src), chunk)]) if len(src) else \
                torch.zeros(0, model.cfg.modalities[self.modality_names.index(m)].n_tokens, model.cfg.d_model)
        return MultiModalTable(self.name, self.modalities, self.tasks, sources, self.index, self.labels,
                               tuple(self.encoded) + tuple(m for m in modalities if m not in self.encoded))

    def to(self, device) -> "MultiModalTable":
        """The same rows with every tensor on ``device`` (``self`` if they are there already)."""
        device = torch.device(device)
        if self.index.device == device:
            return self
        return MultiModalTable(self.name, self.modalities, self.tasks,
                               {m: x.to(device) for m, x in self.sources.items()}, self.index.to(device),
                               self.labels.to(device), self.encoded)

    def loader(self, batch_size: int, shuffle: bool = False, seed: int = 0, drop_last: bool = False):
        """Iterate over collated :class:`Batch` es (fast path; no per-row Python work)."""
        n = len(self)
        order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
        stop = n - batch_size + 1 if drop_last else n
        for s in range(0, max(stop, 0), batch_size):
            yield self.batch(order[s:s + batch_size])

    def __repr__(self):
        return (f"MultiModalTable({self.name!r}, rows={len(self)}, modalities={self.modality_names}, "
                f"tasks={self.task_names}, labelled={self.label_counts().tolist()})")


def _int64(values) -> Tensor:
    """An int64 tensor of ``values`` (a tensor keeps its device)."""
    if isinstance(values, Tensor):
        return values.to(torch.int64)
    return torch.as_tensor(np.asarray(values, dtype=np.int64))


def _usable(present: Tensor, modalities: Sequence[ModalitySpec], tasks: Sequence[TaskSpec]) -> Tensor:
    """(N, T) bool: the row has every modality the task requires (and at least one modality)."""
    names = [m.name for m in modalities]
    cols = []
    any_mod = present.any(dim=1)
    for t in tasks:
        ok = any_mod.clone()
        for r in t.requires:
            ok &= present[:, names.index(r)]
        cols.append(ok)
    return torch.stack(cols, dim=1)
