"""Vectorised local training: masks are honoured bit for bit, and it equals the per-device loop."""

import numpy as np
import pytest
import torch

from hffm_opt.learners.benchmarks import load_benchmark
from hffm_opt.learners.local import (
    local_train,
    local_train_reference,
    param_masks,
    sample_device_batches,
    stack_params,
    unstack_params,
)
from hffm_opt.learners.model import M3TModel, build_model
from hffm_opt.learners.packed import PackedTables
from hffm_opt.learners.partitioning import device_tables, partition
from hffm_opt.learners.specs import ModalitySpec, TaskSpec

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def setup():
    bench = load_benchmark("synthetic", n_modalities=2, n_tasks=2, n_samples=600, p_missing=0.2, seed=3)
    model = M3TModel(bench.model_config(d_model=32, d_ff=32, d_expert=32), seed=0)
    n_dev = 5
    mods = np.ones((n_dev, 2), bool)
    mods[0, 1] = False  # device 0 lacks modality m1
    mods[3, 0] = False  # device 3 lacks m0
    tasks = np.ones((n_dev, 2), bool)
    tasks[1, 1] = False  # device 1 only does t0
    part = partition(bench.train, mods, tasks, alpha=1.0, seed=0)
    train, _ = device_tables(bench.train, part, mods, tasks)
    batches = sample_device_batches(train, steps=3, batch_size=8, rng=0)
    names = model.module_names()
    masks = np.ones((n_dev, len(names)), bool)
    masks[2, :] = False  # device 2 trains nothing this round
    masks[4, names.index("head:t0")] = False
    masks[4, names.index("expert:1")] = False
    masks[1, names.index("adapter:0")] = False
    # perturb the devices' copies so they differ (as after a round of local training)
    stacked = stack_params(model, n_dev)
    g = torch.Generator().manual_seed(0)
    stacked = {n: x + 0.01 * torch.randn(x.shape, generator=g) for n, x in stacked.items()}
    return model, stacked, masks, batches, names, mods, tasks


def test_chunks_of_devices_train_as_one_call_and_a_bad_chunk_size_is_refused(setup):
    """chunk_size bounds the devices of one vmap and autograd pass: chunks of 2 of the 5 devices give the call's
    result (to float rounding); 0, -1, 2.5 or True is refused (it was turned into 1 silently)."""
    model, stacked, masks, batches, *_ = setup
    whole = local_train(model, stacked, masks, batches, tau=3, lr=0.05)
    chunks = local_train(model, stacked, masks, batches, tau=3, lr=0.05, chunk_size=2)
    for n in stacked:
        torch.testing.assert_close(chunks.params[n], whole.params[n], rtol=1e-5, atol=1e-6)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match=r"chunk_size = .*: must be None \(every device at once\) or an integer"):
            local_train(model, stacked, masks, batches, tau=1, chunk_size=bad)


@pytest.mark.parametrize("optimizer,kw,tol", [("sgd", {}, 1e-5), ("sgd", {"momentum": 0.9, "weight_decay": 1e-3}, 1e-5),
                                              ("adam", {}, 1e-3)])
def test_vectorised_equals_reference(setup, optimizer, kw, tol):
    model, stacked, masks, batches, *_ = setup
    lr = 0.05 if optimizer == "sgd" else 1e-3
    fast = local_train(model, stacked, masks, batches, tau=3, lr=lr, optimizer=optimizer, **kw)
    ref = local_train_reference(model, stacked, masks, batches, tau=3, lr=lr, optimizer=optimizer, **kw)
    moved = 0.0
    for n in stacked:
        atol = tol * 0.1 if optimizer == "sgd" else tol
        torch.testing.assert_close(fast.params[n], ref.params[n], rtol=tol, atol=atol)
        moved = max(moved, float((fast.params[n] - stacked[n]).abs().max()))
    assert moved > 1e-4  # something was trained
    assert torch.equal(fast.sample_counts, ref.sample_counts)


def test_masked_modules_stay_bit_identical(setup):
    model, stacked, masks, batches, names, mods, tasks = setup
    before = {n: x.clone() for n, x in stacked.items()}
    res = local_train(model, stacked, masks, batches, tau=3, lr=0.1, optimizer="adam")
    pm = param_masks(model, stacked, masks)
    changed_any = False
    for n, x in res.params.items():
        assert torch.equal(stacked[n], before[n])  # inputs untouched
        for d in range(len(masks)):
            if not bool(pm[n][d]):
                assert torch.equal(x[d], before[n][d]), (n, d)
            elif not torch.equal(x[d], before[n][d]):
                changed_any = True
    assert changed_any
    # device 2 trained nothing, so it reports no samples; device 1 has no t1 labels
    counts = res.sample_counts
    assert counts[2].sum() == 0 and counts[1, 1] == 0 and counts[0].sum() > 0
    # a device lacking modality m1 leaves its (assigned) m1 encoder untouched: no gradient reaches it
    model2 = M3TModel(model.cfg.replace(frozen_kinds=()), seed=0)
    st2 = stack_params(model2, len(masks))
    all_on = np.ones_like(masks)
    res2 = local_train(model2, st2, all_on, batches, tau=2, lr=0.1)
    enc_m1 = [n for n in st2 if model2.module_of(n) == "encoder:m1"]
    assert all(torch.equal(res2.params[n][0], st2[n][0]) for n in enc_m1)
    assert any(not torch.equal(res2.params[n][1], st2[n][1]) for n in enc_m1)


def test_unassigned_task_modules_are_not_touched_even_when_masked_in(setup):
    """Device 1 has no t1 labels: its prompt/head for t1 get no gradient and stay identical under SGD."""
    model, stacked, masks, batches, names, *_ = setup
    res = local_train(model, stacked, np.ones_like(masks), batches, tau=3, lr=0.1)
    for n in stacked:
        if model.module_of(n) in ("head:t1", "prompt:t1"):
            assert torch.equal(res.params[n][1], stacked[n][1])


def test_encoded_tables_give_the_same_training(setup):
    """Caching frozen encoder tokens (with_encoded) changes nothing but the speed."""
    bench = load_benchmark("synthetic", n_modalities=2, n_tasks=2, n_samples=300, seed=4)
    model = M3TModel(bench.model_config(d_model=32, d_ff=32, d_expert=32), seed=1)
    mods, tasks = np.ones((3, 2), bool), np.ones((3, 2), bool)
    mods[0, 0] = False
    part = partition(bench.train, mods, tasks, seed=0)
    raw, _ = device_tables(bench.train, part, mods, tasks)
    enc, _ = device_tables(bench.train.with_encoded(model), part, mods, tasks)
    b_raw = sample_device_batches(raw, 2, 8, rng=0)
    b_enc = sample_device_batches(enc, 2, 8, rng=0)
    assert set(b_enc.encoded) == {"m0", "m1"} and not b_enc.inputs
    st = stack_params(model, 3)
    masks = np.ones((3, len(model.module_names())), bool)
    a = local_train(model, st, masks, b_raw, lr=0.1)
    b = local_train(model, st, masks, b_enc, lr=0.1)
    c = local_train_reference(model, st, masks, b_enc, lr=0.1)
    for n in st:
        torch.testing.assert_close(a.params[n], b.params[n], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(b.params[n], c.params[n], rtol=1e-5, atol=1e-6)


def test_cached_first_layer_stream_gives_the_same_training():
    """Caching the rows' first-layer stream (PackedTables.with_stream) changes nothing but the speed, on the
    vectorised and the reference path, with devices lacking a modality; it is refused while the backbone trains."""
    bench = load_benchmark("synthetic", n_modalities=2, n_tasks=2, n_samples=300, p_missing=0.2, seed=5)
    model = M3TModel(bench.model_config(d_model=32, d_ff=32, d_expert=32), seed=2)
    mods, tasks = np.ones((4, 2), bool), np.ones((4, 2), bool)
    mods[0, 0] = mods[3, 1] = False
    part = partition(bench.train, mods, tasks, seed=1)
    enc, _ = device_tables(bench.train.with_encoded(model), part, mods, tasks)
    packed = PackedTables.from_tables(enc)
    cached = packed.with_stream(model)
    assert cached is not packed and cached.with_stream(model) is cached
    b_enc = sample_device_batches(packed, 3, 8, rng=0)
    b_str = sample_device_batches(cached, 3, 8, rng=0)
    assert set(b_str.stream) == {"m0", "m1"} and not b_str.inputs and not b_str.encoded
    st = stack_params(model, 4)
    masks = np.ones((4, len(model.module_names())), bool)
    a = local_train(model, st, masks, b_enc, lr=0.1, optimizer="adam")
    b = local_train(model, st, masks, b_str, lr=0.1, optimizer="adam")
    c = local_train_reference(model, st, masks, b_str, lr=0.1, optimizer="adam")
    assert all(not torch.equal(a.params[n], st[n]) for n in st if not n.startswith("adapters."))  # it trained
    for n in st:  # Adam turns an expert's gradient of ~1e-8 into a step of ~lr / 2: float rounding moves it ~1e-5
        torch.testing.assert_close(a.params[n], b.params[n], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(b.params[n], c.params[n], rtol=1e-4, atol=1e-4)
    trainable = M3TModel(bench.model_config(d_model=32, d_ff=32, d_expert=32, frozen_kinds=("encoder",)), seed=2)
    assert PackedTables.from_tables(enc).with_stream(trainable).stream == {}
    with pytest.raises(ValueError, match="cached first-layer stream"):
        local_train(trainable, stack_params(trainable, 4), np.ones((4, len(trainable.module_names())), bool), b_str)


def test_easy_vqa_devices_with_images_run_vectorised():
    pytest.importorskip("easy_vqa", reason="easy-vqa is a dependency of hffm_opt.learners (pyproject must list it)")
    bench = load_benchmark("easy_vqa")
    model = M3TModel(bench.model_config(), seed=0)
    mods = np.array([[1, 0], [1, 1], [0, 1]], bool)
    tasks = np.array([[0, 1, 1, 0], [1, 0, 0, 1], [0, 0, 0, 1]], bool)
    part = partition(bench.train, mods, tasks, seed=0)
    train, _ = device_tables(bench.train, part, mods, tasks)
    batches = sample_device_batches(train, 2, 4, rng=0)
    assert batches.inputs["image"].shape == (3, 2, 4, 3, 64, 64)
    assert batches.inputs["text"].shape == (3, 2, 4, 384)
    assert not batches.present["text"][0].any() and not batches.present["image"][2].any()
    st = stack_params(model, 3)
    masks = np.ones((3, len(model.module_names())), bool)
    fast = local_train(model, st, masks, batches, lr=0.05)
    ref = local_train_reference(model, st, masks, batches, lr=0.05)
    for n in st:
        torch.testing.assert_close(fast.params[n], ref.params[n], rtol=1e-4, atol=1e-5)
    names = model.module_names()
    for n in st:  # image-only device 0 never touches the vqa/qtype prompts and heads
        if model.module_of(n) in ("head:vqa", "prompt:vqa", "head:qtype", "prompt:qtype"):
            assert torch.equal(fast.params[n][0], st[n][0])
    assert fast.sample_counts.shape == (3, 4)
    assert len(unstack_params(fast.params, 1)) == len(st)
    assert names[0] == "encoder:image"


def test_input_validation(setup):
    model, stacked, masks, batches, *_ = setup
    with pytest.raises(ValueError, match="masks.shape"):
        local_train(model, stacked, masks[:, :3], batches)
    with pytest.raises(ValueError, match="tau"):
        local_train(model, stacked, masks, batches, tau=9)
    with pytest.raises(ValueError, match="optimizer"):
        local_train(model, stacked, masks, batches, optimizer="lion")
    bad = dict(stacked)
    bad["nope"] = next(iter(stacked.values()))
    with pytest.raises(ValueError, match="not a parameter"):
        local_train(model, bad, masks, batches)
    tiny = build_model((ModalitySpec("v", "vector", (2,)),), (TaskSpec("t", 2),), d_model=8, n_heads=2, d_ff=8,
                       d_expert=8)
    with pytest.raises(ValueError, match="devices"):
        local_train(tiny, stack_params(tiny, 2), np.ones((2, len(tiny.module_names())), bool), batches)


def test_one_group_of_mixed_devices_trains_as_their_own_groups(setup):
    """Devices lacking a modality or a task can share a vmapped call (groups=...): their absent tokens and tasks are
    masked and change nothing, so the result is that of one call per signature and of the per-device loop."""
    model, stacked, masks, batches, *_ = setup
    one = local_train(model, stacked, masks, batches, tau=3, lr=1e-3, optimizer="adam", groups=np.zeros(5, int))
    own = local_train(model, stacked, masks, batches, tau=3, lr=1e-3, optimizer="adam")
    ref = local_train_reference(model, stacked, masks, batches, tau=3, lr=1e-3, optimizer="adam")
    for n in stacked:
        torch.testing.assert_close(one.params[n], own.params[n], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(one.params[n], ref.params[n], rtol=1e-3, atol=1e-5)
    assert torch.equal(one.sample_counts, ref.sample_counts)
