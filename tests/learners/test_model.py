"""The M3T model: shapes, absent modalities, task independence, frozen/trained configuration."""

import pytest
import torch

from hffm_opt.learners.model import M3TConfig, M3TModel, build_model, task_loss
from hffm_opt.learners.specs import ModalitySpec, TaskSpec

torch.set_num_threads(2)

MODS = (ModalitySpec("image", "image", (3, 64, 64), n_tokens=4),
        ModalitySpec("text", "vector", (24,), n_tokens=2, hidden=16),
        ModalitySpec("sensor", "vector", (8,), n_tokens=1, hidden=0))
TASKS = (TaskSpec("vqa", 5, ("image", "text")), TaskSpec("shape", 3, ("image",)), TaskSpec("kind", 2))


def small_model(**kw):
    return build_model(MODS, TASKS, seed=0, d_model=32, n_heads=4, d_ff=32, d_expert=32, image_channels=(8, 8, 16, 16),
                       **kw)


def batch(b=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randint(0, 256, (b, 3, 64, 64), dtype=torch.uint8, generator=g),
            "text": torch.randn(b, 24, generator=g), "sensor": torch.randn(b, 8, generator=g)}


def test_forward_shapes_and_module_names():
    m = small_model()
    out = m(batch())
    assert {t: v.shape for t, v in out.logits.items()} == {"vqa": (6, 5), "shape": (6, 3), "kind": (6, 2)}
    assert out.aux.shape == () and torch.isfinite(out.aux)
    names = m.module_names()
    assert names[:4] == ("encoder:image", "encoder:text", "encoder:sensor", "backbone")
    assert {"gate", "expert:0", "expert:3", "adapter:0", "adapter:1", "prompt:vqa", "head:kind"} <= set(names)
    # every parameter belongs to exactly one module
    owned = [n for params in m.module_parameters().values() for n in params]
    assert sorted(owned) == sorted(n for n, _ in m.named_parameters())


def test_missing_modality_never_touches_its_encoder():
    m = small_model(frozen_kinds=())  # everything trainable, so a gradient would show up if it flowed
    x = batch()
    del x["image"]
    out = m(x, tasks=("kind",))
    task_loss(m, out, torch.zeros(6, 3, dtype=torch.int64), ("kind",), (2,), 0.01).backward()
    assert all(p.grad is None for p in m.encoders["image"].parameters())
    assert all(p.grad is None for p in m.heads["vqa"].parameters())
    assert m.prompts["vqa"].grad is None
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.encoders["text"].parameters())


def test_absent_rows_are_masked_not_data():
    """A row whose modality is marked absent gives the same output whatever its placeholder holds, the same
    as the row with the modality left out, and no gradient flows into the placeholder."""
    m = small_model(frozen_kinds=())
    x = batch()
    present = {"text": torch.tensor([True, False, True, False, True, False])}
    out1 = m(x, present, tasks=("shape", "kind")).logits
    x2 = dict(x, text=x["text"].clone())
    x2["text"][~present["text"]] = 1e3  # garbage where absent
    out2 = m(x2, present, tasks=("shape", "kind")).logits
    for t in out1:
        assert torch.equal(out1[t], out2[t])
    absent = (~present["text"]).nonzero().flatten()
    alone = m({k: v[absent] for k, v in x.items() if k != "text"}, tasks=("shape", "kind")).logits
    for t in alone:
        torch.testing.assert_close(out1[t][absent], alone[t], rtol=1e-5, atol=1e-5)
    xt = x["text"].clone().requires_grad_(True)
    m(dict(x, text=xt), present, tasks=("shape",)).logits["shape"].sum().backward()
    assert torch.all(xt.grad[~present["text"]] == 0)
    assert xt.grad[present["text"]].abs().sum() > 0


def test_task_logits_do_not_depend_on_other_tasks():
    m = small_model()
    x = batch()
    both = m(x, tasks=("vqa", "shape")).logits
    one = m(x, tasks=("shape",)).logits
    torch.testing.assert_close(both["shape"], one["shape"], rtol=1e-5, atol=1e-5)


def test_frozen_configuration_and_reset():
    m = small_model()
    assert m.is_frozen("backbone") and m.is_frozen("encoder:image")
    assert not m.is_frozen("adapter:0") and not m.is_frozen("expert:1")
    assert all(not p.requires_grad for p in m.backbone.parameters())
    assert all(p.requires_grad for p in m.heads.parameters())
    m.apply_freeze(("encoder",))
    assert all(p.requires_grad for p in m.backbone.parameters())
    assert m.cfg.frozen_kinds == ("encoder",)
    fixed = build_model((ModalitySpec("v", "vector", (4,), fixed=True),), (TaskSpec("t", 2),), frozen_kinds=())
    assert fixed.is_frozen("encoder:v") and not fixed.is_frozen("backbone")
    with torch.no_grad():
        m.adapters[0].up.weight.fill_(1.0)
    m.reset_modules(["adapter:0"], seed=3)
    assert torch.all(m.adapters[0].up.weight == 0)


def test_config_validation():
    with pytest.raises(ValueError, match="requires"):
        M3TConfig(MODS, (TaskSpec("x", 2, ("audio",)),))
    with pytest.raises(ValueError, match="top_k"):
        M3TConfig(MODS, TASKS, top_k=9)
    with pytest.raises(ValueError, match="unique"):
        M3TConfig(MODS + MODS[:1], TASKS)
    with pytest.raises(ValueError, match="divisible"):
        M3TConfig(MODS, TASKS, d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="frozen_kinds"):
        M3TConfig(MODS, TASKS, frozen_kinds=("decoder",))
    cfg = M3TConfig(list(MODS), list(TASKS), frozen_kinds=["encoder"])
    assert cfg.modalities == MODS and cfg.frozen_kinds == ("encoder",)  # sequences stored as tuples
    assert cfg.modality_names == ("image", "text", "sensor") and cfg.task_names == ("vqa", "shape", "kind")
    assert cfg.replace(d_model=32).d_model == 32 and cfg.d_model == 64
    with pytest.raises(ValueError, match="top_k"):
        cfg.replace(top_k=0)  # replace validates


def test_seeded_construction_is_reproducible():
    a, b = small_model(), small_model()
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p, q), n
    assert isinstance(a, M3TModel)


@pytest.mark.parametrize("n_layers", [1, 2, 3])
def test_forward_computes_what_the_full_sequence_computes(n_layers):
    """The forward pass (only what the prompt tokens read) gives the logits of the whole token sequence run
    through every layer (``encode``), with absent modalities and trained adapters."""
    m = small_model(n_layers=n_layers)
    with torch.no_grad():
        for a in m.adapters:
            for p in a.parameters():
                p.normal_(0.0, 0.2, generator=torch.Generator().manual_seed(p.numel()))
    x = batch()
    present = {"text": torch.tensor([True, False, True, True, False, True])}
    out = m(x, present).logits
    hidden, _, n_p, _ = m.encode(x, present)
    tasks = m.cfg.task_names
    pooled = hidden[:, :n_p * len(tasks)].unflatten(1, (len(tasks), n_p)).mean(dim=2)
    for i, t in enumerate(tasks):
        torch.testing.assert_close(out[t], m.heads[t](pooled[:, i]), rtol=1e-5, atol=1e-5)
    # the first layer's work on the modality tokens, computed once and passed as the cached stream, gives the same
    stream = m.first_layer_stream(x, present)
    assert {k: v.shape for k, v in stream.items()} == {k: (6, s.n_tokens, 3 * m.cfg.d_model)
                                                       for k, s in zip(m.modality_names, m.cfg.modalities)}
    cached = m({}, present, stream=stream).logits
    for t in tasks:
        torch.testing.assert_close(cached[t], out[t], rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # the stream is what the first layer computes: change that layer, the logits move
        m.backbone.layers[0].ff2.bias.add_(1.0)
    assert not torch.allclose(m(x, present).logits[tasks[0]], cached[tasks[0]], atol=1e-3)


def test_the_stream_is_fixed_only_while_encoders_and_backbone_are_frozen():
    m = small_model()
    assert m.stream_is_fixed()
    m.apply_freeze(("encoder",))
    assert not m.stream_is_fixed()
    m.apply_freeze(("backbone",))  # the image encoder trains
    assert not m.stream_is_fixed()

