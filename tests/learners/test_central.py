"""Central training, pre-training and the linear-probe baseline."""

import math

import pytest
import torch

from hffm_opt.errors import ConfigError
from hffm_opt.learners.benchmarks import load_benchmark
from hffm_opt.learners.central import (
    evaluate_accuracy,
    linear_probe,
    pretrain,
    pretrained_model,
    train_central,
)
from hffm_opt.learners.model import M3TModel

torch.set_num_threads(2)
NEEDS = "is a dependency of hffm_opt.learners (pyproject must list it)"


def test_supervised_pretrain_freezes_core_and_resets_trained_parts():
    bench = load_benchmark("synthetic", n_samples=1000, public_fraction=0.3)
    model = M3TModel(bench.model_config(d_model=32, d_ff=64, d_expert=32), seed=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    summary = pretrain(model, bench.public, encoder_epochs=0, epochs=1, batch_size=32, seed=0, objective="supervised")
    assert summary["joint"]["steps"] > 0
    changed = {model.module_of(n) for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert {"backbone", "encoder:m0", "encoder:m1"} <= changed
    assert all(p.requires_grad == (not model.is_frozen(model.module_of(n))) for n, p in model.named_parameters())
    assert torch.all(model.adapters[0].up.weight == 0)  # adapters back to the identity


def test_central_training_learns_digits_and_probe_runs(tmp_path, monkeypatch):
    pytest.importorskip("sklearn", reason=f"scikit-learn {NEEDS}")
    monkeypatch.setenv("HFFM_OPT_CACHE", str(tmp_path))
    bench = load_benchmark("digits")
    model = pretrained_model(bench, seed=0, config={"d_model": 32, "d_ff": 64, "d_expert": 32}, epochs=3,
                             encoder_epochs=0, objective="supervised")
    (cached,) = tmp_path.iterdir()  # written atomically: the weights and no temporary file
    assert cached.match("pretrained_digits_*.pt")
    again = pretrained_model(bench, seed=0, config={"d_model": 32, "d_ff": 64, "d_expert": 32}, epochs=3,
                             encoder_epochs=0, objective="supervised")  # from the cache
    for (n, p), (_, q) in zip(model.named_parameters(), again.named_parameters()):
        assert torch.equal(p, q), n
    before = evaluate_accuracy(model, bench.test)
    run = train_central(model, bench.train, epochs=3, batch_size=16, lr=3e-3)
    after = evaluate_accuracy(model, bench.test)
    assert run["steps"] == math.ceil(3 * len(bench.train) / 16)
    assert after["digit"] > max(0.5, before["digit"])
    probe = linear_probe(model, bench.train, bench.test)
    assert set(probe) == {"digit", "parity"} and all(0 <= v <= 1 for v in probe.values())
    assert probe["digit"] > 0.3


def test_time_limit_stops_training():
    bench = load_benchmark("synthetic", n_samples=400)
    model = M3TModel(bench.model_config(d_model=16, n_heads=2, d_ff=16, d_expert=16), seed=0)
    run = train_central(model, bench.train, epochs=100, batch_size=8, time_limit_s=0.0)
    assert run["steps"] == 1
    with pytest.raises(ConfigError, match="optimizer = 'rmsprop'"):
        train_central(model, bench.train, optimizer="rmsprop")
    tiny = bench.train.subset(range(5), "tiny")  # no full batch of 8: refused, not an endless loop
    with pytest.raises(ConfigError, match="'tiny': 5 rows, fewer than batch_size = 8"):
        train_central(model, tiny, epochs=1, batch_size=8)
    assert train_central(model, tiny, epochs=1, batch_size=5)["steps"] == 1
