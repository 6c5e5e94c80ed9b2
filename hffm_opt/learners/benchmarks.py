"""The three offline benchmarks, as :class:`~hffm_opt.learners.table.MultiModalTable` s.

Each benchmark (:func:`load_benchmark`) is split into ``train`` (the pool partitioned across devices, see
:mod:`.partitioning`), ``test`` (the global test set) and ``public`` (a held-out split for the central
pre-training that stands in for the foundation model's pre-training; it is never given to devices):

- ``easy_vqa`` (default): modalities ``image`` (3 x 64 x 64 uint8) and ``text`` (384-d MiniLM embedding of the
  question, precomputed and shipped as package data); tasks ``vqa`` (image + question -> one of 13 answers),
  ``shape`` (3) and ``color`` (8) of the image's shape, derived from the questions and answers about the image
  (image-only rows), and ``qtype`` (text only: is the question a yes/no, a shape or a colour question).
- ``digits``: scikit-learn's bundled 8 x 8 digits seen by two "sensors", the top and the bottom half
  (``top``, ``bottom``, 32 values each); tasks ``digit`` (10) and ``parity`` (2).
- ``synthetic``: a seeded generator (:func:`synthetic_benchmark`): latent class -> per-modality observations
  through fixed random non-linear maps plus noise; each task is a different random labelling of the latent.

Images are decoded once with ``matplotlib.image.imread`` and cached as ``.npy`` in the user cache directory
(:func:`~hffm_opt.learners.cache.cache_dir`). The question embeddings (all-MiniLM-L6-v2, 107 x 384 float32)
ship as package data in ``hffm_opt/learners/resources/``; nothing is downloaded at run time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from hffm_opt._io import atomic_path
from hffm_opt.errors import ConfigError

from .cache import cache_dir
from .model import M3TConfig
from .specs import ModalitySpec, TaskSpec
from .table import MultiModalTable

RESOURCES = Path(__file__).with_name("resources")  # bundled files: easy-VQA questions and their embeddings
EASY_VQA_EMBEDDINGS = RESOURCES / "easy_vqa_question_embeddings.npy"
EASY_VQA_QUESTIONS = RESOURCES / "easy_vqa_questions.json"


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
    with atomic_path(path, ".npy") as tmp:  # np.save appends .npy to any other name
        np.save(tmp, out)
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
        raise ConfigError(f"n_modalities, n_tasks, n_samples = {(n_modalities, n_tasks, n_samples)}: all must be >= 1")
    rng = np.random.default_rng(seed)
    dims = [dim] * n_modalities if np.isscalar(dim) else list(dim)
    classes = [n_classes] * n_tasks if np.isscalar(n_classes) else list(n_classes)
    if len(dims) != n_modalities or len(classes) != n_tasks:
        raise ConfigError(f"dim, n_classes = {dims}, {classes}: sequences must have n_modalities = "
                          f"{n_modalities} and n_tasks = {n_tasks} entries")
    if min(classes) < 2 or max(classes) > n_latent:
        raise ConfigError(f"n_classes = {classes}: each must be in 2..n_latent = {n_latent}")
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
        raise ConfigError(f"benchmark = {name!r}: known benchmarks are {sorted(BENCHMARKS)}") from None
    return fn(**kwargs)
