"""Block fading redrawn every edge round: the draws follow path loss x Rayleigh and depend on the seed alone; the
re-solved plans keep the structure, pass ``evaluate`` on the redrawn scenario, meet the budget when feasible and
never cost more than keeping the previous decisions where those still fit."""

import numpy as np
import pytest
from conftest import small_clustered, tiny_scenario

from hffm_opt import evaluate, schedule
from hffm_opt.analysis import dynamic
from hffm_opt.analysis.dynamic import redraw_fading, run_dynamic

STRUCTURE = ("association", "train", "tier", "aggregator", "parent")


def _loss(d):
    """Path loss by hand: -30 dB at 1 m, exponent 3, distances below 1 m held at 1 m."""
    return 1e-3 * np.maximum(d, 1.0) ** -3.0


def test_redraw_keeps_everything_but_the_gains_and_the_missing_links():
    s = tiny_scenario((2, 3), positions=[[0, 0], [5, 5], [300, 0], [310, 0], [320, 5]])
    new = redraw_fading(s, np.random.default_rng(0))
    assert np.array_equal(np.isnan(new.devices.uplink_gain), np.isnan(s.devices.uplink_gain))
    known = ~np.isnan(s.devices.uplink_gain)
    assert (new.devices.uplink_gain[known] != s.devices.uplink_gain[known]).all()
    assert np.array_equal(new.devices.position_m, s.devices.position_m)
    assert np.array_equal(new.devices.pmax_w, s.devices.pmax_w) and np.array_equal(new.devices.edge, s.devices.edge)
    assert np.array_equal(new.d2d.src, s.d2d.src) and np.array_equal(new.d2d.dst, s.d2d.dst)
    assert new.d2d.bandwidth_hz == s.d2d.bandwidth_hz and new.d2d.range_m == s.d2d.range_m
    assert (new.d2d.gain > 0).all() and not np.array_equal(new.d2d.gain, s.d2d.gain)


def test_redrawn_gains_are_path_loss_times_rayleigh_power_of_mean_two():
    s = small_clustered(2, n_e=3, per=4)
    rng = np.random.default_rng(123)
    dev = s.devices
    d_up = np.linalg.norm(dev.position_m[:, None] - s.edges.position_m[None], axis=-1)
    d_d2d = np.linalg.norm(dev.position_m[s.d2d.src] - dev.position_m[s.d2d.dst], axis=1)
    ratios = []
    for _ in range(300):
        new = redraw_fading(s, rng)
        ratios += [(new.devices.uplink_gain / _loss(d_up)).ravel(), new.d2d.gain / _loss(d_d2d)]
    x = np.concatenate(ratios)  # |h|^2 of a complex Gaussian with unit variance per component: exponential, mean 2
    assert abs(x.mean() - 2.0) < 0.1
    assert abs((x <= 2.0 * np.log(2.0)).mean() - 0.5) < 0.02  # its median is 2 ln 2


def test_the_same_generator_state_gives_the_same_draw():
    s = small_clustered(4)
    a = redraw_fading(s, np.random.default_rng(7))
    b = redraw_fading(s, np.random.default_rng(7))
    c = redraw_fading(s, np.random.default_rng(8))
    assert np.array_equal(a.devices.uplink_gain, b.devices.uplink_gain) and np.array_equal(a.d2d.gain, b.d2d.gain)
    assert not np.array_equal(a.d2d.gain, c.d2d.gain)


def _spied(monkeypatch):
    """Record every (scenario, plan, metrics) run_dynamic evaluates."""
    calls = []

    def spy(scenario, plan, *args):
        m = evaluate(scenario, plan, *args)  # the real check: raises PlanError on any violation
        calls.append((scenario, plan, m))
        return m

    monkeypatch.setattr(dynamic, "evaluate", spy)
    return calls


@pytest.mark.parametrize("name", ["hierarchical", "greedy"])
def test_resolved_plans_keep_the_structure_meet_the_budget_and_beat_the_old_decisions(monkeypatch, name):
    s = small_clustered(3, n_e=2, per=3)
    plan = schedule(s, name, e_agg=2)
    budget = 1.02 * evaluate(s, plan).period_latency_s
    calls = _spied(monkeypatch)
    records = run_dynamic(s, plan, rounds=5, seed=1, budget_s=budget)
    assert [r["round"] for r in records] == list(range(5)) and len(calls) == 5
    rng = np.random.default_rng(1)
    previous = plan
    for rec, (drawn, used, m) in zip(records, calls):
        expected = redraw_fading(s, rng)  # the draws are the seed's sequence, one per round
        assert np.array_equal(drawn.devices.uplink_gain, expected.devices.uplink_gain)
        assert np.array_equal(drawn.d2d.gain, expected.d2d.gain)
        for f in STRUCTURE:
            assert np.array_equal(getattr(used, f), getattr(plan, f)), f
        assert (rec["latency_s"], rec["energy_j"]) == (m.latency_s, m.energy_j)
        assert rec["resolve_s"] >= 0
        if rec["feasible"]:
            assert m.period_latency_s <= budget * (1 + 1e-9)
            kept = evaluate(drawn, previous.for_scenario(drawn))  # the old decisions on the new draw
            if kept.period_latency_s <= budget * (1 - 1e-5):  # the old decisions still fit: re-solving is no worse
                assert m.energy_j <= kept.energy_j * (1 + 1e-6)
        else:  # the round keeps the previous decisions
            assert all(np.array_equal(getattr(used, f), getattr(previous, f))
                       for f in ("cpu_hz", "bandwidth_hz", "power_w", "d2d_power_w", "d2d_down_power_w"))
        previous = used
    assert any(r["feasible"] for r in records)


def test_run_dynamic_is_a_function_of_its_seed():
    s = small_clustered(8, n_e=2, per=3)
    plan = schedule(s, "hierarchical-d2d", e_agg=2)

    def figures(seed):
        return [(r["latency_s"], r["energy_j"], r["feasible"]) for r in run_dynamic(s, plan, rounds=2, seed=seed)]

    assert figures(5) == figures(5)
    assert figures(5) != figures(6)


def test_an_unreachable_budget_keeps_the_original_decisions_every_round(monkeypatch):
    s = small_clustered(1, n_e=2, per=2)
    plan = schedule(s, "hierarchical", e_agg=2)
    calls = _spied(monkeypatch)
    records = run_dynamic(s, plan, rounds=3, seed=0, budget_s=1e-6)
    assert not any(r["feasible"] for r in records)
    for rec, (drawn, used, _) in zip(records, calls):
        assert np.array_equal(used.power_w, plan.power_w) and np.array_equal(used.cpu_hz, plan.cpu_hz)
        assert rec["energy_j"] == evaluate(drawn, plan.for_scenario(drawn)).energy_j
