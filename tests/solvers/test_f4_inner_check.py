"""The D2D cluster's inner solve is checked, not trusted: its decisions are priced again as the evaluator prices them,
and a solver's 'optimal' at a point past the budget is a failure; F4 then falls back to the start's decisions."""

import numpy as np
import pytest
from conftest import small_clustered as small

from hffm_opt.evaluate import evaluate
from hffm_opt.formulations.cluster import cluster_data
from hffm_opt.formulations.joint import build_joint
from hffm_opt.schedulers import schedule
from hffm_opt.solvers import Status
from hffm_opt.solvers.f4.cluster import apply_allocation, solve_tree, tree_costs
from hffm_opt.solvers.f4.decomposition import cluster_costs, improve, optimise


@pytest.mark.parametrize("e_agg", [1, 2, 8])
def test_tree_costs_are_the_evaluators_period_and_energy(e_agg):
    s = small(4, n_e=2, per=3)
    plan = schedule(s, "hierarchical-d2d", e_agg=e_agg, local_steps=3, batch_size=8)
    budget = 1.5 * evaluate(s, plan).period_latency_s
    for e in range(s.n_edges):
        data = cluster_data(s, plan, e)
        alloc = solve_tree(data, budget)
        assert alloc.feasible and alloc.certified
        period, energy = tree_costs(data, alloc)
        periods, energies = cluster_costs(s, apply_allocation(plan, {e: (data.members, alloc)}))
        assert period == pytest.approx(periods[e], rel=1e-12) and period <= budget
        assert energy == pytest.approx(energies[e], rel=1e-12) and alloc.energy_j == energy


def _start_at_full_power(tau):
    s = small(1, n_e=2, per=3)
    start = schedule(s, "greedy", e_agg=2, local_steps=tau, batch_size=8)
    return s, start, evaluate(s, start)


@pytest.mark.parametrize("tau", [1, 5])
def test_no_slack_budget_gives_a_point_within_it_or_an_unproven_failure(tau):
    s, start, m = _start_at_full_power(tau)
    for e in range(s.n_edges):
        data = cluster_data(s, start, e)
        alloc = solve_tree(data, m.period_latency_s)
        if alloc.feasible:
            assert tree_costs(data, alloc)[0] <= m.period_latency_s
        else:
            assert "cluster of edge" in alloc.message


@pytest.mark.parametrize("tau", [1, 5])
def test_f4_at_the_starts_own_latency_keeps_the_start_where_nothing_cheaper_is_proven(tau):
    s, start, m = _start_at_full_power(tau)
    model = build_joint(s, start, m.latency_s)
    for res in (improve(model), optimise(model, workers=1)):
        assert res.status != Status.INFEASIBLE, res.message
        got = evaluate(s, res.plan)
        assert got.latency_s <= m.latency_s * (1 + 1e-9)
        assert got.energy_j <= m.energy_j * (1 + 1e-9) and res.objective == got.energy_j
        assert np.all(cluster_costs(s, res.plan)[0] <= m.period_latency_s * (1 + 1e-9))
