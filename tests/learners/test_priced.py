"""The priced catalogue: the foundation model's sizes on the proxy's modules, the update the scenario's model_bits."""

import dataclasses

import pytest

from hffm_opt.errors import ConfigError
from hffm_opt.evaluate import evaluate
from hffm_opt.learners.catalogue import module_catalogue
from hffm_opt.learners.model import MODULE_KINDS, M3TModel, build_model
from hffm_opt.learners.priced import VILT_B32, FoundationModel, _natural, priced_catalogue, trainable_scale
from hffm_opt.learners.specs import ModalitySpec, TaskSpec
from hffm_opt.network.generators import DeviceProfile, clustered
from hffm_opt.schedulers import schedule

# one modality of each pricing rule: an image (patch projection), text (word embeddings), a sensor (projection)
ENCODERS = {"image": ("image", (3, 64, 64), 4, True), "text": ("vector", (384,), 2, False),
            "sensor": ("vector", (8,), 1, True)}


@pytest.fixture(scope="module")
def model():
    mods = [ModalitySpec(name, kind, shape, n_tokens=n, hidden=16 if trained else 0, fixed=not trained)
            for name, (kind, shape, n, trained) in ENCODERS.items()]
    tasks = [TaskSpec("vqa", 13, ("image", "text")), TaskSpec("shape", 3, ("image",)), TaskSpec("kind", 2)]
    return build_model(mods, tasks, seed=0, n_layers=3)


def test_same_modules_as_the_proxy_in_the_same_order(model):
    proxy, priced = module_catalogue(model, cluster_local_experts=[1]), priced_catalogue(
        model, 48e6, cluster_local_experts=[1])
    assert [s.name for s in priced] == [s.name for s in proxy] == list(model.module_names())
    for p, q in zip(proxy, priced):
        assert (p.kind, p.key, p.trainable, p.cluster_local) == (q.kind, q.key, q.trainable, q.cluster_local), p.name
        assert q.full_bits > p.full_bits and q.memory_bytes > p.memory_bytes, p.name  # a much larger model
    assert [s.name for s in priced if s.cluster_local] == ["expert:1"]


@pytest.mark.parametrize("bits", [48e6, 1e6 + 7, 3.2e9])
def test_total_trainable_update_is_model_bits_exactly(model, bits):
    priced = priced_catalogue(model, bits)
    assert sum(s.update_bits for s in priced) == bits
    assert all(s.update_bits == int(s.update_bits) for s in priced)
    assert all(s.update_bits == 0 for s in priced if not s.trainable)
    # shares in proportion to the natural (unscaled) foundation sizes
    params, _ = _natural(model, VILT_B32)
    scale = trainable_scale(model, bits)
    for s in priced:
        if s.trainable:
            assert s.update_bits == pytest.approx(32 * params[s.name] * scale, abs=1.0), s.name


def test_frozen_core_has_the_published_vilt_sizes(model):
    specs = {s.name: s for s in priced_catalogue(model, 48e6)}
    vilt = (specs["backbone"].full_bits + specs["encoder:image"].full_bits) / 32
    assert vilt == pytest.approx(87.4e6, rel=0.015)  # ViLT-B/32's reported parameter count
    assert specs["encoder:text"].full_bits / 32 == pytest.approx(30522 * 768, rel=0.01)  # BERT word embeddings
    assert specs["backbone"].memory_bytes == specs["backbone"].full_bits / 8
    # ~190 tokens through 12 layers: ~33 GFLOP forward, twice that to pass gradients to the trained prompts/adapters
    assert 2 * 30e9 < specs["backbone"].flops_per_sample < 2 * 40e9
    assert specs["encoder:image"].flops_per_sample == pytest.approx(2 * 3072 * 768 * 144 + 768 * 144)
    # three proxy adapters share the twelve layers four by four
    assert specs["adapter:0"].update_bits == pytest.approx(specs["adapter:2"].update_bits, abs=1)
    assert specs["adapter:0"].train_memory_bytes == pytest.approx(3 * specs["adapter:0"].memory_bytes)


def test_bad_inputs_are_refused(model):
    with pytest.raises(ConfigError, match="model_bits = 0"):
        priced_catalogue(model, 0)
    with pytest.raises(ConfigError, match="no trainable module"):
        priced_catalogue(M3TModel(model.cfg.replace(frozen_kinds=MODULE_KINDS)), 48e6)
    with pytest.raises(ConfigError, match="foundation.d_model"):
        FoundationModel(d_model=100)
    with pytest.raises(ConfigError, match="foundation.n_layers = 2: must be >= the model's n_layers = 3"):
        priced_catalogue(model, 48e6, foundation=dataclasses.replace(VILT_B32, n_layers=2))
    with pytest.raises(ConfigError, match="optimizer"):
        priced_catalogue(model, 48e6, optimizer="rmsprop")


def test_foundation_pricing_is_far_slower_than_proxy_pricing(model):
    profile = DeviceProfile(modalities=model.modality_names, tasks=model.task_names, samples_per_task=50)
    base = clustered(2, 3, seed=0, profile=profile)
    out = {}
    for name, specs in (("proxy", module_catalogue(model)), ("foundation", priced_catalogue(model, 48e6))):
        world = base.replace(modules=specs)
        m = evaluate(world, schedule(world, "hierarchical", e_agg=2))
        out[name] = (m.latency_s, m.latency_by_part["uplink"], sum(s.update_bits for s in specs))
    (lat_p, up_p, bits_p), (lat_f, up_f, bits_f) = out["proxy"], out["foundation"]
    assert lat_f > 10 * lat_p
    assert up_f / up_p == pytest.approx(bits_f / bits_p, rel=1e-9)  # same links, 48e6 bits instead of the proxy's
    small = dataclasses.replace(VILT_B32, n_layers=3, d_model=64, n_heads=4, d_ff=128, image_size=64, vocab=100)
    world = base.replace(modules=priced_catalogue(model, bits_p, foundation=small))
    assert evaluate(world, schedule(world, "hierarchical", e_agg=2)).latency_s < lat_f
