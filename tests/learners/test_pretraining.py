"""Self-supervised pre-training: the frozen core is trained, without ever reading a label."""

import pytest
import torch

from hffm_opt.errors import ConfigError
from hffm_opt.learners.benchmarks import load_benchmark
from hffm_opt.learners.central import central_vs_linear, pretrain, pretrained_model
from hffm_opt.learners.model import M3TConfig, M3TModel
from hffm_opt.learners.pretraining import _views
from hffm_opt.learners.specs import ModalitySpec, TaskSpec
from hffm_opt.learners.table import MultiModalTable

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TINY = {"d_model": 16, "d_ff": 16, "d_expert": 16, "n_heads": 2}
SMALL = {"encoder_epochs": 1.0, "epochs": 1.0, "batch_size": 32}


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("synthetic", n_samples=600, public_fraction=0.3, p_missing=0.2)


def _pretrained(bench, public=None, seed=0, **kw):
    model = M3TModel(bench.model_config(**TINY), seed=seed)
    summary = pretrain(model, bench.public if public is None else public, seed=seed, **{**SMALL, **kw})
    return model, summary


def _same(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_labels_are_never_read(bench):
    pub = bench.public
    unlabelled = MultiModalTable(pub.name, pub.modalities, pub.tasks, pub.sources, pub.index,
                                 torch.full_like(pub.labels, -1))
    shuffled = MultiModalTable(pub.name, pub.modalities, pub.tasks, pub.sources, pub.index, pub.labels.flip(0))
    a, _ = _pretrained(bench)
    assert _same(a, _pretrained(bench, unlabelled)[0]) and _same(a, _pretrained(bench, shuffled)[0])
    c, _ = _pretrained(bench, objective="contrastive")
    assert _same(c, _pretrained(bench, shuffled, objective="contrastive")[0])
    b, _ = _pretrained(bench, objective="supervised")  # the former objective does read them
    sup_shuffled, _ = _pretrained(bench, shuffled, objective="supervised")
    assert not _same(b, sup_shuffled)


def test_frozen_core_is_trained_and_the_rest_reset(bench):
    fresh = M3TModel(bench.model_config(**TINY), seed=0)
    model, summary = _pretrained(bench)
    assert set(summary["encoders"]) == {"m0", "m1"} and summary["joint"]["steps"] == -(-len(bench.public) // 32)
    for k, params in model.module_parameters().items():
        old = fresh.module_parameters()[k]
        if model.is_frozen(k):  # every frozen module (encoders, backbone) was trained
            assert any(not torch.equal(p, old[n]) for n, p in params.items()), k
        assert all(p.requires_grad == (not model.is_frozen(k)) for p in params.values()), k
    assert torch.all(model.adapters[0].up.weight == 0)  # adapters back to the identity
    again, _ = _pretrained(bench)
    other, _ = _pretrained(bench, seed=1)
    assert _same(model, again) and not _same(model, other)


def test_losses_fall_and_fixed_encoders_stay_fixed():
    easy_like = (ModalitySpec("img", "image", (3, 64, 64), n_tokens=4),
                 ModalitySpec("txt", "vector", (8,), n_tokens=2, hidden=0, fixed=True))
    g = torch.Generator().manual_seed(0)
    images = torch.zeros(64, 3, 64, 64, dtype=torch.uint8)
    for i in range(64):  # one coloured square per image, anywhere
        r, c = torch.randint(0, 48, (2,), generator=g).tolist()
        images[i, i % 3, r:r + 16, c:c + 16] = 255
    index = torch.stack([torch.arange(64), torch.arange(64) % 8], 1)
    sources = {"img": images, "txt": torch.randn(8, 8, generator=g)}
    table = MultiModalTable("sq", easy_like, (TaskSpec("y", 2),), sources, index, torch.zeros(64, 1, dtype=torch.int64))
    model = M3TModel(_config(easy_like), seed=0)
    before = {n: p.detach().clone() for n, p in model.encoders["txt"].named_parameters()}
    first = pretrain(model, table, encoder_epochs=0.5, epochs=0.5, batch_size=16, lr=2e-3)
    model2 = M3TModel(_config(easy_like), seed=0)
    last = pretrain(model2, table, encoder_epochs=20, epochs=20, batch_size=16, lr=2e-3)
    assert last["encoders"]["img"]["loss"] < 0.7 * first["encoders"]["img"]["loss"]
    assert last["joint"]["loss"] < first["joint"]["loss"]
    assert set(first["encoders"]) == {"img"}  # the fixed projection is not pre-trained
    assert all(torch.equal(p, before[n]) for n, p in model.encoders["txt"].named_parameters())


def test_contrastive_objective_reads_no_label_and_trains_only_image_encoders():
    table, mods = _squares()
    unlabelled = MultiModalTable("sq", mods, table.tasks, table.sources, table.index, torch.full_like(table.labels, -1))
    kw = {"encoder_epochs": 2, "epochs": 1, "batch_size": 16, "objective": "contrastive"}
    a, b = M3TModel(_config(mods), seed=0), M3TModel(_config(mods), seed=0)
    fresh = M3TModel(_config(mods), seed=0)
    summary = pretrain(a, table, **kw)
    pretrain(b, unlabelled, **kw)
    assert _same(a, b) and set(summary["encoders"]) == {"img"} and summary["joint"]["steps"] == 4
    assert summary["encoders"]["img"]["steps"] == 1  # 64 pictures, one batch of 128 views
    assert not torch.equal(a.encoders["img"].proj.weight, fresh.encoders["img"].proj.weight)
    assert all(torch.equal(p, q) for p, q in zip(a.encoders["txt"].parameters(), fresh.encoders["txt"].parameters()))


def test_views_keep_the_picture_format_and_are_seeded():
    table, _ = _squares()
    x = table.sources["img"][:8]
    v = _views(x, torch.Generator().manual_seed(3))
    assert v.shape == (8, 3, 64, 64) and v.dtype == torch.float32 and 0.0 <= v.min() and v.max() <= 1.0
    assert torch.equal(v, _views(x, torch.Generator().manual_seed(3)))
    assert not torch.equal(v, _views(x, torch.Generator().manual_seed(4)))
    assert (v.amax(1) - v.amin(1) > 0.5).any(dim=(1, 2)).all()  # every coloured square is still in view


def _squares():
    mods = (ModalitySpec("img", "image", (3, 64, 64), n_tokens=4),
            ModalitySpec("txt", "vector", (8,), n_tokens=2, hidden=0, fixed=True))
    g = torch.Generator().manual_seed(0)
    images = torch.full((64, 3, 64, 64), 240, dtype=torch.uint8)
    for i in range(64):  # one coloured square per image, anywhere
        r, c = torch.randint(0, 48, (2,), generator=g).tolist()
        images[i, :, r:r + 16, c:c + 16] = 0
        images[i, i % 3, r:r + 16, c:c + 16] = 255
    index = torch.stack([torch.arange(64), torch.arange(64) % 8], 1)
    sources = {"img": images, "txt": torch.randn(8, 8, generator=g)}
    return MultiModalTable("sq", mods, (TaskSpec("y", 2),), sources, index, torch.zeros(64, 1, dtype=torch.int64)), mods


def _config(mods):
    return M3TConfig(mods, (TaskSpec("y", 2),), **TINY, image_channels=(8, 8, 16, 16))


def test_bad_options_and_the_cache_key(bench, tmp_path, monkeypatch):
    model = M3TModel(bench.model_config(**TINY), seed=0)
    with pytest.raises(ConfigError, match="objective = 'clip'"):
        pretrain(model, bench.public, objective="clip")
    with pytest.raises(ConfigError, match="mask_ratio = 1.0"):
        pretrain(model, bench.public, mask_ratio=1.0)
    with pytest.raises(ConfigError, match=r"\['pool'\] not known to objective 'supervised'"):
        pretrain(model, bench.public, objective="supervised", encoder_options={"pool": 2})
    mlp = pretrain(model, bench.public, encoder_options={"decoder_hidden": 8}, **SMALL)  # an MLP decoder
    assert set(mlp["encoders"]) == {"m0", "m1"} and mlp["encoders"]["m0"]["steps"] > 0
    monkeypatch.setenv("HFFM_OPT_CACHE", str(tmp_path))
    a = pretrained_model(bench, config=TINY, **SMALL)
    b = pretrained_model(bench, config=TINY, objective="supervised", **SMALL)
    assert len(list(tmp_path.glob("pretrained_synthetic_*.pt"))) == 2 and not _same(a, b)


def test_the_cached_model_does_not_depend_on_the_callers_threads(bench, tmp_path, monkeypatch):
    """Pre-training amplifies the float rounding of a thread count: it runs on one thread whatever the caller's, so
    every command that fills the cache fills it with the same model; the caller's count is restored after."""
    from hffm_opt.learners import central

    seen = []
    monkeypatch.setattr(central, "pretrain", lambda *a, **k: seen.append(torch.get_num_threads()))
    monkeypatch.setenv("HFFM_OPT_CACHE", str(tmp_path))
    torch.set_num_threads(2)
    try:
        pretrained_model(bench, config=TINY, **SMALL)
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)


@pytest.mark.slow
@pytest.mark.xfail(reason="issue 12 target not met (2026-11-29, seed 0): default (masked) gap -1.6 points; "
                          "+2.3 with 6 epochs at lr 3e-3; contrastive (encoder_epochs=40) +1.1, +2.4 with lr 3e-3 "
                          "x 4 epochs",
                   strict=False)
def test_easy_vqa_frozen_features_are_far_from_central_training():
    """The measured comparison of issue 12 (several minutes on 2 cores; pre-training is cached)."""
    pytest.importorskip("easy_vqa")
    pytest.importorskip("sklearn")
    res = central_vs_linear(load_benchmark("easy_vqa"), epochs=2.0, batch_size=16)
    assert res["gap"] >= 0.10
    assert res["central"]["vqa"] > res["linear"]["vqa"] + 0.10
