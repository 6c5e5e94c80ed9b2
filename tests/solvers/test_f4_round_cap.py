"""The edge-round cap of plain F4 (``round_cap_s``; ``optimal(..., match_rounds=True)``): each edge round but the
period's last ends within the cap, as the evaluator prices the plan, at no less energy than without it."""

import math

import numpy as np
import pytest
from conftest import small_clustered, tiny_scenario
from hypothesis import given, settings
from hypothesis import strategies as st

from hffm_opt import evaluate, schedule
from hffm_opt.errors import ConfigError, SchedulerError
from hffm_opt.formulations.cluster import cluster_data
from hffm_opt.formulations.joint import build_joint
from hffm_opt.schedulers.optimising import joint_model
from hffm_opt.solvers import solve
from hffm_opt.solvers.f4.cluster import SAFETY, apply_allocation, solve_cluster
from hffm_opt.solvers.f4.structures import set_structure


def d2d_pairs(seed: int):
    """2 clusters of 3 devices whose D2D links are 3-30x stronger than their uplinks."""
    rng = np.random.default_rng(seed)
    return tiny_scenario((3, 3), gains=10 ** rng.uniform(-10.3, -9.7, 6), d2d_gain=10 ** rng.uniform(-9.5, -8.5),
                         samples=rng.integers(50, 200, (6, 2)))


@given(seed=st.integers(0, 10_000), e_agg=st.sampled_from([2, 4]), d2d=st.booleans())
@settings(max_examples=6, deadline=None)
def test_matched_rounds_end_no_later_than_the_reference_and_cost_no_less(seed, e_agg, d2d):
    sc = d2d_pairs(seed) if d2d else small_clustered(seed)
    reference = evaluate(sc, schedule(sc, "hierarchical-d2d", e_agg=e_agg))
    free = schedule(sc, "optimal", e_agg=e_agg)
    matched = schedule(sc, "optimal", e_agg=e_agg, match_rounds=True)
    assert matched.meta["status"] in ("optimal", "feasible"), matched.meta["message"]
    m = evaluate(sc, matched)
    assert (m.round_end_s <= reference.round_end_s * (1 + 1e-6)).all()
    assert m.energy_j >= evaluate(sc, free).energy_j * (1 - 1e-6)
    # the proven bound of the capped problem stays below what the plan costs
    assert matched.meta["bound"] <= m.energy_j * (1 + 1e-9)


@given(seed=st.integers(0, 10_000), share=st.floats(0.5, 0.999))
@settings(max_examples=8, deadline=None)
def test_a_capped_direct_cluster_is_the_uncapped_one_with_the_period_the_cap_leaves(seed, share):
    # without D2D every round has the same upload phase: a cap c on the rounds but the last is the period budget
    # e_agg (c - t_dl) + fixed without a cap
    sc = small_clustered(seed)
    plan = schedule(sc, "hierarchical", e_agg=4)
    free = cluster_data(sc, plan, 0)
    budget = 4 * evaluate(sc, plan).latency_s
    up = (budget - free.fixed_s) / 4
    cap = share * (up + free.downlink_s)
    capped = solve_cluster(cluster_data(sc, plan, 0, cap), budget)
    equivalent = solve_cluster(free, (4 * (cap * (1 - SAFETY) - free.downlink_s) + free.fixed_s) / (1 - SAFETY))
    assert capped.feasible == equivalent.feasible
    if share > 0.95:  # close enough to the uncapped round to be met
        assert capped.feasible
    if capped.feasible:
        assert capped.energy_j == pytest.approx(equivalent.energy_j, rel=1e-9)
        assert capped.energy_j > solve_cluster(free, budget).energy_j


def one_d2d_cluster(seed: int):
    """One cluster of 3 devices whose D2D links are 3-30x stronger than their uplinks: the evaluator's round ends
    are that cluster's own."""
    rng = np.random.default_rng(seed)
    return tiny_scenario((3,), gains=10 ** rng.uniform(-10.3, -9.7, 3), d2d_gain=10 ** rng.uniform(-9.5, -8.5),
                         samples=rng.integers(50, 200, (3, 2)))


@given(seed=st.integers(0, 10_000), share=st.floats(0.6, 0.98))
@settings(max_examples=6, deadline=None)
def test_a_capped_relay_tree_keeps_its_rounds_within_the_cap_as_the_evaluator_prices_them(seed, share):
    sc = one_d2d_cluster(seed)
    plan = schedule(sc, "hierarchical-d2d", e_agg=4)
    members = np.flatnonzero(plan.association == 0)
    chain = set_structure(plan, sc, 0, members, (int(members[0]), np.array([-1, members[0], members[1]])))
    budget = evaluate(sc, chain).period_latency_s * 1.5
    free = solve_cluster(cluster_data(sc, chain, 0), budget)
    assert free.feasible
    free_round = evaluate(sc, apply_allocation(chain, {0: (members, free)})).round_end_s[0]
    cap = share * free_round
    capped = solve_cluster(cluster_data(sc, chain, 0, cap), budget)
    if share > 0.9:  # close to the uncapped round: met by spending more
        assert capped.feasible, capped.message
    if not capped.feasible:  # a cap below what full power allows: proven infeasible, never ignored
        assert "cannot finish" in capped.message and "edge round" in capped.message
        return
    m = evaluate(sc, apply_allocation(chain, {0: (members, capped)}))
    assert m.round_end_s[0] <= cap * (1 + 1e-9) and m.period_latency_s <= budget * (1 + 1e-9)
    assert m.energy_j >= evaluate(sc, apply_allocation(chain, {0: (members, free)})).energy_j * (1 - 1e-9)


def test_the_exact_mode_and_f4_agree_under_the_cap():
    sc = d2d_pairs(3)
    model = joint_model(sc, e_agg=4, match_rounds=True)
    assert math.isfinite(model.round_cap_s)
    exact, f4 = solve(model, "exact"), solve(model, "fast")
    assert exact.ok and f4.ok, (exact.message, f4.message)
    assert f4.objective == pytest.approx(exact.objective, rel=1e-6)


@pytest.mark.parametrize("cap", [0, -1.0, float("nan"), True, "1"])
def test_a_bad_round_cap_is_refused_naming_it(cap):
    sc = small_clustered(0)
    with pytest.raises(ConfigError, match="round_cap_s"):
        build_joint(sc, schedule(sc, "hierarchical", e_agg=2), 1.0, round_cap_s=cap)


def test_the_cap_is_refused_where_it_would_be_ignored():
    sc = small_clustered(0)
    start = schedule(sc, "hierarchical", e_agg=2)
    with pytest.raises(ConfigError, match="plain F4"):
        build_joint(sc, start, 1.0, round_cap_s=1.0, coverage="cluster")
    with pytest.raises(ConfigError, match="energy objective"):
        build_joint(sc, start, None, objective="latency", round_cap_s=1.0)
    model = build_joint(sc, start, 10.0, round_cap_s=5.0)
    assert solve(model, "local-search").status.value == "error"
    with pytest.raises(SchedulerError, match="match_rounds"):
        schedule(sc, "optimal", e_agg=2, match_rounds="yes")
    with pytest.raises(SchedulerError, match="e_aggs"):
        schedule(sc, "optimal", e_agg=2, match_rounds=True, e_aggs=(2, 4))
    with pytest.raises(SchedulerError, match="match_rounds"):
        schedule(sc, "optimal", e_agg=2, match_rounds=True, edge_tiers=True)


def test_without_a_cap_nothing_changes():
    sc = small_clustered(1)
    plan = schedule(sc, "hierarchical", e_agg=4)
    budget = 4 * evaluate(sc, plan).latency_s
    a = solve_cluster(cluster_data(sc, plan, 1), budget)
    b = solve_cluster(cluster_data(sc, plan, 1, math.inf), budget)
    assert a.energy_j == b.energy_j and np.array_equal(a.bandwidth_hz, b.bandwidth_hz)
