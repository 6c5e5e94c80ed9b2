"""Offline multi-modal multi-task data: tables, three benchmarks, and the non-IID device partition.

A :class:`MultiModalTable` is a torch ``Dataset`` of *rows*. Each modality keeps one source tensor of distinct
items (the 4,000 easy-VQA images, the 107 question embeddings, ...) and each row points into the sources it has
(``index[row, m] = -1`` = the row lacks modality ``m``) and carries one label per task (``-1`` = no label for
that task). ``table[i]`` yields ``({modality: tensor}, {task: int})`` with only the modalities the row has.

Benchmarks (:func:`load_benchmark`), each split into ``train`` (the pool partitioned across devices), ``test``
(the global test set) and ``public`` (a held-out split for the central pre-training that stands in for the
foundation model's pre-training; it is never given to devices):

- ``easy_vqa`` (default): modalities ``image`` (3 x 64 x 64 uint8) and ``text`` (384-d MiniLM embedding of the
  question, precomputed and shipped as package data); tasks ``vqa`` (image + question -> one of 13 answers),
  ``shape`` (3) and ``color`` (8) of the image's shape, derived from the questions and answers about the image
  (image-only rows), and ``qtype`` (text only: is the question a yes/no, a shape or a colour question).
- ``digits``: scikit-learn's bundled 8 x 8 digits seen by two "sensors", the top and the bottom half
  (``top``, ``bottom``, 32 values each); tasks ``digit`` (10) and ``parity`` (2).
- ``synthetic``: a seeded generator (:func:`synthetic_benchmark`): latent class -> per-modality observations
  through fixed random non-linear maps plus noise; each task is a different random labelling of the latent.

Partitioning (:func:`partition`): rows are split across devices by a per-class Dirichlet draw (label-skewed,
non-IID, seeded) among the devices that can use them (device has one of the row's labelled tasks and the
modalities that task requires); then each device's rows are split into its own train and test part. Every row
ends up in exactly one place (one device's train or test part, or ``unassigned`` when no device can use it).
:func:`device_tables` restricts each device's rows to its modalities and tasks.

Images are decoded once with ``matplotlib.image.imread`` and cached as ``.npy`` in the user cache directory
(``$HFFM_OPT_CACHE``, else ``$XDG_CACHE_HOME/hffm_opt``, else ``~/.cache/hffm_opt``). The question embeddings
(all-MiniLM-L6-v2, 107 x 384 float32) ship as package data in ``hffm_opt/learners/data/``; nothing is
downloaded at run time. :meth:`MultiModalTable.with_encoded` replaces the sources of frozen encoders by their
tokens, computed once per item, which makes training several times cheaper without changing its result.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, NamedTuple, Protocol, Sequence, runtime_checkable

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .model import M3TConfig, ModalitySpec, SpecNames, TaskSpec

PACKAGE_DATA = Path(__file__).with_name("resources")  # bundled files: easy-VQA questions and their embeddings
EASY_VQA_EMBEDDINGS = PACKAGE_DATA / "easy_vqa_question_embeddings.npy"
EASY_VQA_QUESTIONS = PACKAGE_DATA / "easy_vqa_questions.json"


@runtime_checkable
class MultiModalDataset(Protocol):
    """What the learners need of a data set: a map-style dataset whose item ``i`` is
    ``({modality: tensor}, {task: label})`` (only the modalities the sample has; label -1 = no label)."""

    modalities: tuple[ModalitySpec, ...]
    tasks: tuple[TaskSpec, ...]

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> tuple[dict[str, Tensor], dict[str, int]]: ...


class Batch(NamedTuple):
    """A collated batch: ``inputs[m]`` (B, *shape), ``present[m]`` (B,) bool, ``labels`` (B, T) int64, and
    ``encoded[m]`` (B, n_tokens, d_model) for the modalities of a pre-encoded table (then not in ``inputs``).

    Rows lacking modality ``m`` hold zeros in ``inputs[m]`` that the model masks out of attention
    (``present[m]`` False); a modality no row has is left out of ``inputs`` altogether."""

    inputs: dict[str, Tensor]
    present: dict[str, Tensor]
    labels: Tensor
    encoded: dict[str, Tensor] | None = None

    def model_kwargs(self) -> dict:
        """Keyword arguments of :meth:`M3TModel.forward` for this batch (inputs, present, encoded)."""
        return {"inputs": self.inputs, "present": self.present, "encoded": self.encoded or None}


def cache_dir() -> Path:
    """The user cache directory of hffm_opt (created on demand)."""
    env = os.environ.get("HFFM_OPT_CACHE")
    if env:
        path = Path(env)
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        path = Path(base) / "hffm_opt"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _atomic_save(path: Path, arr: np.ndarray) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp.npy")
    np.save(tmp, arr)
    tmp.replace(path)


# --------------------------------------------------------------------------- the table
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
        self.index = torch.as_tensor(np.asarray(index), dtype=torch.int64)
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
        n, n_m, n_t = len(self.index), len(self.modalities), len(self.tasks)
        if self.index.shape != (n, n_m):
            raise ValueError(f"{name}.index.shape = {tuple(self.index.shape)}: must be (rows, {n_m} modalities)")
        if self.labels.shape != (n, n_t):
            raise ValueError(f"{name}.labels.shape = {tuple(self.labels.shape)}: must be ({n}, {n_t} tasks)")
        for j, m in enumerate(self.modalities):
            src = self.sources[m.name]
            if m.name in self.encoded:
                if src.dim() != 3 or src.shape[1] != m.n_tokens:
                    raise ValueError(f"{name}.sources[{m.name}].shape = {tuple(src.shape)}: pre-encoded items must be "
                                     f"(n, {m.n_tokens} tokens, d_model)")
            elif tuple(src.shape[1:]) != m.shape:
                raise ValueError(f"{name}.sources[{m.name}].shape = {tuple(src.shape)}: items must be {m.shape}")
            col = self.index[:, j]
            if n and (col.max() >= len(src) or col.min() < -1):
                raise ValueError(f"{name}.index[:, {m.name}]: entries must be -1 or < {len(src)}")
        for j, t in enumerate(self.tasks):
            col = self.labels[:, j]
            if n and (col.max() >= t.n_classes or col.min() < -1):
                raise ValueError(f"{name}.labels[:, {t.name}]: labels must be -1 or in 0..{t.n_classes - 1}")

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
        return self.present.any(dim=0).numpy()

    def label_counts(self) -> np.ndarray:
        """(T,) number of rows labelled for each task."""
        return (self.labels >= 0).sum(dim=0).numpy()

    def subset(self, rows, name: str | None = None) -> "MultiModalTable":
        """The given rows (index array), sharing the sources."""
        rows = torch.as_tensor(np.asarray(rows, dtype=np.int64))
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
        """Collate rows. ``modalities`` fixes which keys ``inputs`` has (default: those some row has)."""
        rows = torch.as_tensor(np.asarray(rows, dtype=np.int64))
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
                raise ValueError(f"modalities: encoder:{m} is trainable, its tokens cannot be cached")
            src = self.sources[m]
            enc = model.encoders[m]
            sources[m] = torch.cat([enc(src[i:i + chunk]) for i in range(0, len(src), chunk)]) if len(src) else \
                torch.zeros(0, model.cfg.modalities[self.modality_names.index(m)].n_tokens, model.cfg.d_model)
        return MultiModalTable(self.name, self.modalities, self.tasks, sources, self.index, self.labels,
                               tuple(self.encoded) + tuple(m for m in modalities if m not in self.encoded))

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


@dataclass(frozen=True, eq=False)
class Benchmark:
    """A benchmark: specs, the device pool ``train``, the global ``test`` set, the ``public`` pre-training split."""

    name: str
    modalities: tuple[ModalitySpec, ...]
    tasks: tuple[TaskSpec, ...]
    train: MultiModalTable
    test: MultiModalTable
    public: MultiModalTable
    meta: dict = field(default_factory=dict)

    def model_config(self, **overrides) -> M3TConfig:
        """An :class:`M3TConfig` for this benchmark's modalities and tasks."""
        return M3TConfig(self.modalities, self.tasks, **overrides)


# --------------------------------------------------------------------------- easy-VQA
SHAPES = ("circle", "rectangle", "triangle")
COLORS = ("red", "green", "blue", "black", "gray", "teal", "brown", "yellow")
QTYPES = ("yesno", "shape", "color")


def _load_images(split: str, refresh: bool = False) -> np.ndarray:
    """(N, 3, 64, 64) uint8 images of an easy-VQA split, decoded once and cached as .npy."""
    import easy_vqa

    path = cache_dir() / f"easy_vqa_{split}_images.npy"
    if path.exists() and not refresh:
        return np.load(path)
    from matplotlib.image import imread

    paths = easy_vqa.get_train_image_paths() if split == "train" else easy_vqa.get_test_image_paths()
    if sorted(paths) != list(range(len(paths))):
        raise RuntimeError(f"easy-VQA {split} image ids are not 0..{len(paths) - 1}")
    out = np.empty((len(paths), 3, 64, 64), np.uint8)
    for i in range(len(paths)):
        img = imread(paths[i])
        if img.dtype != np.uint8:
            img = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
        out[i] = img[..., :3].transpose(2, 0, 1)
    _atomic_save(path, out)
    return out


def _derive_shape_color(questions, answers, image_ids, n_images: int) -> tuple[np.ndarray, np.ndarray]:
    """Shape and colour of each image from the questions asked about it (-1 where they do not tell).

    A shape/colour answer names it; a shape/colour question word qualifies the answer's object ("what is the
    blue shape?"); a yes/no answer confirms or (with "not"/"no" in the question) denies the word it asks about;
    a value is known when confirmed once, or when all but one value are denied."""
    pos_s = [set() for _ in range(n_images)]
    neg_s = [set() for _ in range(n_images)]
    pos_c = [set() for _ in range(n_images)]
    neg_c = [set() for _ in range(n_images)]
    for q, a, i in zip(questions, answers, image_ids):
        words = q.rstrip("?").split()
        if a in SHAPES or a in COLORS:
            truth = True
            (pos_s if a in SHAPES else pos_c)[i].add(a)
        else:
            truth = (a == "yes") != ("not" in words or "no" in words)
        for w in words:
            if w in SHAPES:
                (pos_s if truth else neg_s)[i].add(w)
            elif w in COLORS:
                (pos_c if truth else neg_c)[i].add(w)

    def resolve(pos, neg, vocab):
        out = np.full(n_images, -1, np.int64)
        for i in range(n_images):
            if len(pos[i]) == 1:
                out[i] = vocab.index(next(iter(pos[i])))
            elif not pos[i]:
                rest = [v for v in vocab if v not in neg[i]]
                if len(rest) == 1:
                    out[i] = vocab.index(rest[0])
        return out

    return resolve(pos_s, neg_s, SHAPES), resolve(pos_c, neg_c, COLORS)


def _qtype(question: str, answer: str) -> int:
    if answer in ("yes", "no"):
        return 0
    return 1 if answer in SHAPES else 2


def easy_vqa_question_embeddings() -> tuple[list[str], np.ndarray]:
    """The 107 distinct easy-VQA questions and their 384-d all-MiniLM-L6-v2 embeddings (package data)."""
    questions = json.loads(EASY_VQA_QUESTIONS.read_text())["questions"]
    emb = np.load(EASY_VQA_EMBEDDINGS).astype(np.float32)
    return questions, emb


def easy_vqa_benchmark(public_images: int = 1000, seed: int = 0, image_tokens: int = 4, text_tokens: int = 2,
                       max_questions_per_image: int | None = None) -> Benchmark:
    """The easy-VQA benchmark (see the module docstring), fully offline.

    ``public_images`` of the 4,000 training images (drawn with ``seed``) and all their questions form the
    ``public`` pre-training split; the other images are the device pool; the 1,000 test images are the global
    test set. Each image gives one image-only row (labels ``shape``, ``color``) and one row per question
    (image + text, labels ``vqa``, ``qtype``). ``max_questions_per_image`` keeps at most that many questions
    per image (None = all ~9.6). The text modality is ``fixed``: its encoder is a frozen linear projection of
    the sentence embedding (already a foundation model's output), never trained.
    """
    import easy_vqa

    qs, emb = easy_vqa_question_embeddings()
    q_index = {q: i for i, q in enumerate(qs)}
    answers = easy_vqa.get_answers()
    mods = (ModalitySpec("image", "image", (3, 64, 64), n_tokens=image_tokens),
            ModalitySpec("text", "vector", (emb.shape[1],), n_tokens=text_tokens, hidden=0, fixed=True))
    tasks = (TaskSpec("vqa", len(answers), ("image", "text")), TaskSpec("shape", len(SHAPES), ("image",)),
             TaskSpec("color", len(COLORS), ("image",)), TaskSpec("qtype", len(QTYPES), ("text",)))

    def rows_of(split):
        q, a, ids = easy_vqa.get_train_questions() if split == "train" else easy_vqa.get_test_questions()
        images = _load_images(split)
        n_img = len(images)
        shape, color = _derive_shape_color(q, a, ids, n_img)
        img_rows_index = np.stack([np.arange(n_img), np.full(n_img, -1)], axis=1)
        img_rows_labels = np.stack([np.full(n_img, -1), shape, color, np.full(n_img, -1)], axis=1)
        ids = np.asarray(ids, np.int64)
        keep = np.ones(len(q), bool)
        if max_questions_per_image is not None:
            seen = np.zeros(n_img, np.int64)
            for r, i in enumerate(ids):
                keep[r] = seen[i] < max_questions_per_image
                seen[i] += keep[r]
        q_rows_index = np.stack([ids, np.array([q_index[x] for x in q])], axis=1)[keep]
        q_rows_labels = np.stack([np.array([answers.index(x) for x in a]), np.full(len(q), -1),
                                  np.full(len(q), -1), np.array([_qtype(x, y) for x, y in zip(q, a)])], axis=1)[keep]
        index = np.concatenate([img_rows_index, q_rows_index])
        labels = np.concatenate([img_rows_labels, q_rows_labels])
        table = MultiModalTable(f"easy_vqa/{split}", mods, tasks,
                                {"image": torch.from_numpy(images), "text": torch.from_numpy(emb)}, index, labels)
        return table, n_img

    train_all, n_train_img = rows_of("train")
    test, _ = rows_of("test")
    rng = np.random.default_rng(seed)
    public_ids = np.zeros(n_train_img, bool)
    public_ids[rng.permutation(n_train_img)[:public_images]] = True
    is_public = public_ids[train_all.index[:, 0].numpy()]
    public = train_all.subset(np.flatnonzero(is_public), "easy_vqa/public")
    train = train_all.subset(np.flatnonzero(~is_public), "easy_vqa/train")
    params = {"public_images": int(public_images), "seed": seed, "image_tokens": image_tokens,
              "text_tokens": text_tokens, "max_questions_per_image": max_questions_per_image}
    return Benchmark("easy_vqa", mods, tasks, train, test, public,
                     meta={"answers": answers, "shapes": SHAPES, "colors": COLORS, "qtypes": QTYPES, "params": params})


# --------------------------------------------------------------------------- digits
def digits_benchmark(test_fraction: float = 0.2, public_fraction: float = 0.1, seed: int = 0,
                     tokens: int = 2) -> Benchmark:
    """scikit-learn's 1,797 bundled 8 x 8 digits as two sensor views (top and bottom half, scaled to [0, 1]);
    tasks ``digit`` and ``parity``. Rows are split at random (``seed``) into test, public and train."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)
    top, bottom = x[:, :4].reshape(len(x), -1), x[:, 4:].reshape(len(x), -1)
    mods = (ModalitySpec("top", "vector", (32,), n_tokens=tokens, hidden=64),
            ModalitySpec("bottom", "vector", (32,), n_tokens=tokens, hidden=64))
    tasks = (TaskSpec("digit", 10), TaskSpec("parity", 2))
    n = len(x)
    index = np.stack([np.arange(n), np.arange(n)], axis=1)
    labels = np.stack([d.target, d.target % 2], axis=1)
    full = MultiModalTable("digits", mods, tasks, {"top": torch.from_numpy(top), "bottom": torch.from_numpy(bottom)},
                           index, labels)
    return _split_benchmark("digits", full, test_fraction, public_fraction, seed,
                            meta={"params": {"test_fraction": test_fraction, "public_fraction": public_fraction,
                                             "seed": seed, "tokens": tokens}})


def _split_benchmark(name, full: MultiModalTable, test_fraction, public_fraction, seed, meta=None) -> Benchmark:
    n = len(full)
    perm = np.random.default_rng(seed).permutation(n)
    n_test, n_pub = int(round(test_fraction * n)), int(round(public_fraction * n))
    return Benchmark(name, full.modalities, full.tasks,
                     train=full.subset(np.sort(perm[n_test + n_pub:]), f"{name}/train"),
                     test=full.subset(np.sort(perm[:n_test]), f"{name}/test"),
                     public=full.subset(np.sort(perm[n_test:n_test + n_pub]), f"{name}/public"), meta=meta or {})


# --------------------------------------------------------------------------- synthetic
def synthetic_benchmark(n_modalities: int = 2, n_tasks: int = 2, n_samples: int = 2000, n_latent: int = 8,
                        n_classes: int | Sequence[int] = 4, dim: int | Sequence[int] = 16, latent_dim: int = 8,
                        noise: float = 0.3, p_missing: float = 0.0, test_fraction: float = 0.2,
                        public_fraction: float = 0.1, seed: int = 0, tokens: int = 2) -> Benchmark:
    """Seeded synthetic multi-modal multi-task data.

    Each sample draws a latent class ``z`` in ``0..n_latent-1`` and a latent vector ``h = mu_z + N(0, 0.5^2)``
    (``latent_dim``). Modality ``m`` (named ``m0``, ``m1``, ...) observes ``tanh(A_m gelu(B_m h)) + N(0, noise^2)``
    with fixed random maps (``dim`` features, per modality if a sequence). Task ``t`` (``t0``, ...) labels the
    sample with a fixed random surjective map of ``z`` onto ``n_classes`` classes (per task if a sequence).
    ``p_missing`` removes each modality of each sample with that probability (never all of them).
    """
    if n_modalities < 1 or n_tasks < 1 or n_samples < 1:
        raise ValueError(f"n_modalities, n_tasks, n_samples = {(n_modalities, n_tasks, n_samples)}: all must be >= 1")
    rng = np.random.default_rng(seed)
    dims = [dim] * n_modalities if np.isscalar(dim) else list(dim)
    classes = [n_classes] * n_tasks if np.isscalar(n_classes) else list(n_classes)
    if len(dims) != n_modalities or len(classes) != n_tasks:
        raise ValueError("dim / n_classes sequences must have n_modalities / n_tasks entries")
    if min(classes) < 2 or max(classes) > n_latent:
        raise ValueError(f"n_classes = {classes}: each must be in 2..n_latent = {n_latent}")
    mu = rng.normal(0.0, 1.5, (n_latent, latent_dim))
    z = rng.integers(0, n_latent, n_samples)
    h = mu[z] + rng.normal(0.0, 0.5, (n_samples, latent_dim))
    sources, mods = {}, []
    for m, dm in enumerate(dims):
        b = rng.normal(0.0, 1.0 / np.sqrt(latent_dim), (latent_dim, 2 * dm))
        a = rng.normal(0.0, 1.0 / np.sqrt(2 * dm), (2 * dm, dm))
        pre = h @ b
        act = 0.5 * pre * (1.0 + np.tanh(0.7978845608 * (pre + 0.044715 * pre ** 3)))
        obs = np.tanh(act @ a) + rng.normal(0.0, noise, (n_samples, dm))
        sources[f"m{m}"] = torch.from_numpy(obs.astype(np.float32))
        mods.append(ModalitySpec(f"m{m}", "vector", (dm,), n_tokens=tokens, hidden=64))
    labels, tasks = [], []
    for t, c in enumerate(classes):
        mapping = np.concatenate([np.arange(c), rng.integers(0, c, n_latent - c)])
        rng.shuffle(mapping)
        labels.append(mapping[z])
        tasks.append(TaskSpec(f"t{t}", c))
    index = np.tile(np.arange(n_samples)[:, None], (1, n_modalities))
    if p_missing > 0:
        drop = rng.random((n_samples, n_modalities)) < p_missing
        full = drop.all(axis=1)
        drop[full, rng.integers(0, n_modalities, int(full.sum()))] = False
        index[drop] = -1
    table = MultiModalTable("synthetic", mods, tasks, sources, index, np.stack(labels, axis=1))
    params = {"n_modalities": n_modalities, "n_tasks": n_tasks, "n_samples": n_samples, "n_latent": n_latent,
              "n_classes": classes, "dim": dims, "latent_dim": latent_dim, "noise": noise, "p_missing": p_missing,
              "test_fraction": test_fraction, "public_fraction": public_fraction, "seed": seed, "tokens": tokens}
    return _split_benchmark("synthetic", table, test_fraction, public_fraction, seed,
                            meta={"latent": z, "params": params})


BENCHMARKS = {"easy_vqa": easy_vqa_benchmark, "digits": digits_benchmark, "synthetic": synthetic_benchmark}


def load_benchmark(name: str = "easy_vqa", **kwargs) -> Benchmark:
    """Load a benchmark by name (``easy_vqa``, ``digits``, ``synthetic``), passing ``kwargs`` to its loader."""
    try:
        fn = BENCHMARKS[name]
    except KeyError:
        raise ValueError(f"benchmark = {name!r}: known benchmarks are {sorted(BENCHMARKS)}") from None
    return fn(**kwargs)


# --------------------------------------------------------------------------- partitioning
def dirichlet_split(labels, n_parts: int, alpha: float, rng: np.random.Generator, min_size: int = 0,
                    max_tries: int = 100) -> list[np.ndarray]:
    """Split positions ``0..len(labels)-1`` into ``n_parts`` disjoint parts, class by class, with shares drawn
    from Dirichlet(``alpha``): small ``alpha`` = each part dominated by few classes. Redraws (up to
    ``max_tries``) until every part has at least ``min_size`` positions, then keeps the last draw. Every position
    is in exactly one part; the result depends only on the inputs and the generator's state."""
    labels = np.asarray(labels)
    if n_parts < 1:
        raise ValueError(f"n_parts = {n_parts}: must be >= 1")
    if not alpha > 0:
        raise ValueError(f"alpha = {alpha}: must be > 0")
    classes = np.unique(labels)
    parts: list[np.ndarray] = []
    for _ in range(max(1, max_tries)):
        chunks: list[list[np.ndarray]] = [[] for _ in range(n_parts)]
        for c in classes:
            pos = rng.permutation(np.flatnonzero(labels == c))
            share = rng.dirichlet(np.full(n_parts, alpha))
            cuts = np.floor(np.cumsum(share)[:-1] * len(pos)).astype(np.int64)
            for p, piece in enumerate(np.split(pos, cuts)):
                chunks[p].append(piece)
        parts = [np.sort(np.concatenate(ch)) if ch else np.empty(0, np.int64) for ch in chunks]
        if min(len(p) for p in parts) >= min_size:
            break
    return parts


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
        raise ValueError(f"modalities {modalities.shape} / tasks {tasks.shape}: must be (U, {len(table.modalities)}) "
                         f"and (U, {len(table.tasks)})")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction = {test_fraction}: must be in [0, 1)")
    rng = np.random.default_rng(seed)
    elig = _eligible(table, modalities, tasks)
    labels = table.labels.numpy()
    labelled = labels >= 0
    first_task = np.where(labelled.any(axis=1), labelled.argmax(axis=1), -1)
    # group rows by (who can use them, which task splits them)
    key = np.concatenate([elig, first_task[:, None] + 1], axis=1)
    groups, inverse = np.unique(key, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    per_dev: list[list[np.ndarray]] = [[] for _ in range(n_dev)]
    unassigned = []
    for g, gkey in enumerate(groups):
        rows = np.flatnonzero(inverse == g)
        devs = np.flatnonzero(gkey[:n_dev])
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


def sample_counts(tables: Sequence[MultiModalTable]) -> np.ndarray:
    """(U, T) int: labelled samples per device and task, the scenario's ``n_{u,t}``."""
    return np.stack([t.label_counts() for t in tables]).astype(np.int64)
