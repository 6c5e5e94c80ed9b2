"""The trainer's per-round dynamics, server optimisers, served accuracy and evaluation split, each against numbers
computed apart: unavailable, unsampled and straggling devices train nothing and weigh nothing, every realised round
is priced by ``evaluate`` of its own channel and devices, server updates follow their formulas, and resuming a
checkpoint stays bit-identical with every new kind of state in play."""

import dataclasses

import numpy as np
import pytest
import torch

from hffm_opt.errors import ConfigError
from hffm_opt.evaluate import evaluate
from hffm_opt.learners.setup import learning_setup
from hffm_opt.learners.trainer import CHECKPOINT, TrainConfig, _Run, train
from hffm_opt.network.fading import redraw_fading
from hffm_opt.plan import CLOUD
from hffm_opt.schedulers import schedule
from hffm_opt.solvers.f4.cluster import optimise_continuous

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CFG = TrainConfig(rounds=2, lr=5e-3, local_steps=2, batch_size=8, personalised=False)


@pytest.fixture(scope="module")
def setup():
    """2 clusters x 3 devices (0-2 and 3-5), both modalities and both tasks everywhere, a small synthetic model."""
    return learning_setup("synthetic", scenario="clustered", n_edges=2, devices_per_edge=3, heterogeneity="none",
                          alpha=0.5, benchmark_kwargs={"n_samples": 900},
                          model_config={"d_model": 16, "d_ff": 32, "d_expert": 16, "n_heads": 2},
                          pretrain_kwargs={"epochs": 1, "encoder_epochs": 0}, cache=False)


def _clusters(directory):
    return torch.load(directory / CHECKPOINT, weights_only=True)["clusters"]


def _trace(tmp_path, rows):
    path = tmp_path / "trace.csv"
    path.write_text("device,start_round,end_round\n" + "".join(f"{u},{a},{b}\n" for u, a, b in rows))
    return path


def _without(plan, devices):
    x = plan.train.copy()
    x[list(devices)] = False
    return plan.replace(train=x)


def _as_run(plan, config):
    return plan.replace(local_steps=config.local_steps, batch_size=config.batch_size)


def test_an_unavailable_device_is_the_plan_without_it(setup, tmp_path):
    """Device 1 is in no interval of the trace: the run equals the static run of the plan where device 1 trains
    nothing, bit for bit, and the clock follows that plan's price."""
    s = setup.scenario
    plan = schedule(s, "hierarchical", e_agg=2)
    config = dataclasses.replace(CFG, rounds=3)
    trace = _trace(tmp_path, [(u, 1, 3) for u in range(6) if u != 1])
    h = train(s, plan, setup.data, dataclasses.replace(config, availability_trace=str(trace)),
              checkpoint_dir=tmp_path / "a")
    ref = train(s, _without(plan, [1]), setup.data, config, checkpoint_dir=tmp_path / "b")
    got, want = _clusters(tmp_path / "a"), _clusters(tmp_path / "b")
    assert all(torch.equal(got[n], want[n]) for n in want)
    assert [r["available"] for r in h.records] == [5, 5, 5] and [r["participants"] for r in h.records] == [5, 5, 5]
    m = evaluate(s, _as_run(_without(plan, [1]), config))
    np.testing.assert_allclose([r["time_s"] for r in h.records],
                               [m.round_end_s[0], m.period_latency_s, m.period_latency_s + m.round_end_s[0]], rtol=1e-12)
    np.testing.assert_allclose([r["energy_j"] for r in h.records], [r["energy_j"] for r in ref.records], rtol=1e-12)
    assert [r["accuracy"] for r in h.records] == [r["accuracy"] for r in ref.records]


def test_stragglers_are_decided_by_each_realised_round(setup, tmp_path):
    """Device 2 computes at 1 Hz under a 60 s deadline and is available in round 2 only: a straggler then (its
    round waits for the deadline), simply absent otherwise; every round priced by evaluate of who was there."""
    s = setup.scenario
    plan = schedule(s, "hierarchical", e_agg=2)
    cpu = plan.cpu_hz.copy()
    cpu[2] = 1.0
    plan = plan.replace(cpu_hz=cpu, deadline_s=60.0)
    trace = _trace(tmp_path, [(u, 1, 3) for u in range(6) if u != 2] + [(2, 2, 2)])
    config = dataclasses.replace(CFG, rounds=3, availability_trace=str(trace))
    h = train(s, plan, setup.data, config)
    assert [r["available"] for r in h.records] == [5, 6, 5]
    assert [r["stragglers"] for r in h.records] == [0, 1, 0]
    assert [r["participants"] for r in h.records] == [5, 5, 5]
    absent, present = evaluate(s, _as_run(_without(plan, [2]), config)), evaluate(s, _as_run(plan, config))
    assert present.stragglers.tolist() == [u == 2 for u in range(6)] and not absent.stragglers.any()
    want_s = [absent.round_end_s[0], present.round_end_s[1] - present.round_end_s[0], absent.round_end_s[0]]
    want_j = [absent.round_energy_j[0], present.round_energy_j[1], absent.round_energy_j[0]]
    np.testing.assert_allclose([r["round_latency_s"] for r in h.records], want_s, rtol=1e-12)
    np.testing.assert_allclose([r["round_energy_j"] for r in h.records], want_j, rtol=1e-12)
    np.testing.assert_allclose(h.records[-1]["time_s"], sum(want_s), rtol=1e-12)
    assert h.records[1]["round_latency_s"] >= 60.0 - present.round_end_s[0] - 1e-9  # it waited for the deadline


def test_sampling_trains_exactly_the_sampled_devices(setup, tmp_path):
    s = setup.scenario
    plan = schedule(s, "hierarchical", e_agg=4)
    config = dataclasses.replace(CFG, rounds=1, seed=5)
    h = train(s, plan, setup.data, dataclasses.replace(config, participation=0.5), checkpoint_dir=tmp_path / "a")
    rng = np.random.default_rng(np.random.SeedSequence(5, spawn_key=(3,)))  # the sampling stream
    chosen = set(rng.choice(np.arange(6), size=3, replace=False).tolist())
    train(s, _without(plan, set(range(6)) - chosen), setup.data, config, checkpoint_dir=tmp_path / "b")
    got, want = _clusters(tmp_path / "a"), _clusters(tmp_path / "b")
    assert all(torch.equal(got[n], want[n]) for n in want)
    assert h.records[0]["participants"] == 3 and h.records[0]["available"] == 6


def test_block_fading_prices_each_round_on_its_own_draw_and_resolved_plan(setup):
    s = setup.scenario
    plan = schedule(s, "hierarchical", e_agg=2)
    config = dataclasses.replace(CFG, rounds=3, seed=2)
    h = train(s, plan, setup.data, dataclasses.replace(config, fading="block"))
    static = train(s, plan, setup.data, config)
    rng = np.random.default_rng(np.random.SeedSequence(2, spawn_key=(1,)))  # the fading stream
    current = _as_run(plan, config)
    budget = evaluate(s, current).period_latency_s
    for r, rec in enumerate(h.records):
        drawn = redraw_fading(s, rng)
        current = current.for_scenario(drawn)
        new, _, problems = optimise_continuous(drawn, current, budget)
        current = current if problems else new
        m = evaluate(drawn, current)
        pos = r % 2
        assert rec["resolved"] == (not problems)
        np.testing.assert_allclose(rec["round_latency_s"], m.round_end_s[pos] - (m.round_end_s[0] if pos else 0.0),
                                   rtol=1e-9)
        np.testing.assert_allclose(rec["round_energy_j"], m.round_energy_j[pos], rtol=1e-9)
    assert any(r["resolved"] for r in h.records)
    # nobody straggles here, so training itself is the static run's (the minibatch stream is untouched)
    assert [r["accuracy"] for r in h.records] == [r["accuracy"] for r in static.records]
    assert [r["time_s"] for r in h.records] != [r["time_s"] for r in static.records]


def test_edge_server_adam_follows_its_formula(setup, tmp_path):
    """One edge round, no cloud: FedAdam's first step from the starting model with g = start - FedAvg's mean."""
    s = setup.scenario
    plan = schedule(s, "hierarchical", e_agg=4)
    config = dataclasses.replace(CFG, rounds=1)
    train(s, plan, setup.data, config, checkpoint_dir=tmp_path / "avg")
    train(s, plan, setup.data, dataclasses.replace(config, edge_optimizer="fedadam", server_lr=0.05,
                                                   server_betas=(0.8, 0.9), server_eps=1e-2),
          checkpoint_dir=tmp_path / "adam")
    mean, got = _clusters(tmp_path / "avg"), _clusters(tmp_path / "adam")
    start = dict(setup.data.model.named_parameters())
    for n, x in mean.items():
        old = start[n].detach().unsqueeze(0).expand_as(x)
        g = old - x
        want = old - 0.05 * (0.2 * g) / ((0.1 * g * g).sqrt() + 1e-2)
        torch.testing.assert_close(got[n], want, rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(got[n], mean[n]) for n in mean)


def test_cloud_server_momentum_follows_its_formula(setup, tmp_path):
    """One period: the cloud's FedAvgM step from the starting (global) model towards the FedAvg cloud mean."""
    s = setup.scenario
    plan = schedule(s, "hierarchical", e_agg=2)
    assert (plan.tier == CLOUD).all()
    train(s, plan, setup.data, CFG, checkpoint_dir=tmp_path / "avg")
    train(s, plan, setup.data, dataclasses.replace(CFG, cloud_optimizer="fedavgm", server_lr=0.5),
          checkpoint_dir=tmp_path / "m")
    mean, got = _clusters(tmp_path / "avg"), _clusters(tmp_path / "m")
    start = dict(setup.data.model.named_parameters())
    for n, x in mean.items():
        old = start[n].detach()
        torch.testing.assert_close(got[n], (old - 0.5 * (old - x[0])).expand_as(x), rtol=1e-5, atol=1e-6)
        assert torch.equal(got[n][0], got[n][1])  # both clusters hold the new global model


def _constant_heads(run, classes):
    """Cluster e's head of task t predicts ``classes[e][t]`` for every row (zero weights, a one-hot bias)."""
    for t, task in enumerate(run.model.task_names):
        w, b = run.clusters[f"heads.{task}.fc.weight"], run.clusters[f"heads.{task}.fc.bias"]
        w.zero_()
        b.zero_()
        for e, per_task in enumerate(classes):
            b[e, per_task[t]] = 10.0


def _hand_accuracy(labels, classes):
    """acc[e][t] = share of the rows labelled for t whose label is classes[e][t]."""
    out = np.zeros((len(classes), labels.shape[1]))
    for e, per_task in enumerate(classes):
        for t in range(labels.shape[1]):
            col = labels[:, t][labels[:, t] >= 0]
            out[e, t] = np.mean(col == per_task[t])
    return out


@pytest.mark.parametrize("split", ["test", "validation"])
def test_served_accuracy_is_each_device_served_by_its_cluster_model(setup, split):
    """Device 0 (cluster 0) runs only t0, device 4 (cluster 1) only t1; edge-only plan, hand-set constant heads."""
    s = setup.scenario
    samples = s.devices.samples.copy()
    samples[0, 1] = 0
    samples[4, 0] = 0
    s2 = s.replace(devices=dataclasses.replace(s.devices, samples=samples))
    plan = schedule(s2, "edge-only", e_agg=2)
    run = _Run(s2, plan, setup.data, dataclasses.replace(CFG, eval_split=split, personalised=True))
    classes = [[0, 1], [2, 0]]
    _constant_heads(run, classes)
    got = run._evaluate(last=True)
    table = setup.data.global_test if split == "test" else setup.data.validation
    acc = _hand_accuracy(table.labels.numpy(), classes)
    runs = samples > 0
    home = plan.association
    assert home.tolist() == [0, 0, 0, 1, 1, 1]
    by_task = [np.mean([acc[home[u], t] for u in range(6) if runs[u, t]]) for t in range(2)]
    served = np.mean([np.mean([acc[home[u], t] for t in range(2) if runs[u, t]]) for u in range(6)])
    assert got["served_accuracy"] == pytest.approx(100 * served, rel=1e-12)
    assert [got["served_accuracy_by_task"][t] for t in ("t0", "t1")] == pytest.approx([100 * v for v in by_task])
    # accuracy: per task the clusters weighted by size (3 and 3), then the mean over tasks
    assert got["accuracy"] == pytest.approx(100 * np.mean(acc.mean(axis=0)), rel=1e-12)
    assert got["served_accuracy"] != pytest.approx(got["accuracy"])  # the two definitions differ here
    assert (got["personalised_accuracy"] is None) == (split == "validation")  # local test rows are test data


def test_validation_split_needs_a_validation_table(setup):
    s = setup.scenario
    plan = schedule(s, "hierarchical", e_agg=2)
    data = dataclasses.replace(setup.data, validation=None)
    with pytest.raises(ConfigError, match="eval_split = 'validation'.*data.validation"):
        train(s, plan, data, dataclasses.replace(CFG, eval_split="validation"))


@pytest.mark.parametrize("rounds_first", [2, 3])
def test_resume_is_bit_identical_with_dynamics_and_server_state(setup, tmp_path, rounds_first):
    """Cut after a period end (2) or mid-period (3, the checkpoint written at the last round of a shorter run)."""
    s = setup.scenario
    plan = schedule(s, "hierarchical", e_agg=2)
    config = dataclasses.replace(CFG, rounds=4, fading="block", availability=0.8, participation=0.75,
                                 edge_optimizer="fedadam", cloud_optimizer="fedavgm", prox_mu=0.1, seed=3)
    full = train(s, plan, setup.data, config, checkpoint_dir=tmp_path / "full")
    train(s, plan, setup.data, dataclasses.replace(config, rounds=rounds_first), checkpoint_dir=tmp_path / "cut")
    resumed = train(s, plan, setup.data, config, checkpoint_dir=tmp_path / "cut")
    assert resumed.to_json() == full.to_json()
    a, b = _clusters(tmp_path / "full"), _clusters(tmp_path / "cut")
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert len({r["participants"] for r in full.records}) > 1 or any(r["available"] < 6 for r in full.records)
    again = train(s, plan, setup.data, config)
    assert again.to_json() == full.to_json()  # same inputs and seed, same numbers
