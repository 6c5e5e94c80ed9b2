"""F4's least-latency and weighted objectives, and the screening that spares pricing structures."""

import numpy as np
import pytest
from conftest import small_clustered as small
from hypothesis import Phase, example, given, settings
from hypothesis import strategies as st

from hffm_opt.errors import ConfigError
from hffm_opt.evaluate import evaluate
from hffm_opt.formulations.cluster import cluster_data
from hffm_opt.formulations.joint import build_joint
from hffm_opt.network.topology import usable_links
from hffm_opt.schedulers import schedule
from hffm_opt.schedulers.optimising import joint_model
from hffm_opt.solvers import Status, solve
from hffm_opt.solvers.f4.cluster import SAFETY, solve_cluster
from hffm_opt.solvers.f4.decomposition import optimise
from hffm_opt.solvers.f4.objectives import least_latency
from hffm_opt.solvers.f4.screening import least_period, structure_bound
from hffm_opt.solvers.f4.structures import in_tree, rooted_arborescences, set_structure

SAME_PROBLEM = ("hierarchical", "hierarchical-d2d", "greedy", "random", "local-search")


def _structures(s, plan, e):
    members = np.flatnonzero(plan.association == e)
    usable = usable_links(s, members)
    return members, [None] + [(int(members[r]), in_tree(p, members)) for r, p in rooted_arborescences(usable)]


@settings(max_examples=4, deadline=None, phases=[Phase.explicit, Phase.generate])
@given(seed=st.integers(0, 10_000), e_agg=st.sampled_from([1, 2, 8]), stretch=st.sampled_from([1.0001, 1.05, 2.0]))
def test_screening_bounds_every_structure_and_predicts_feasibility(seed, e_agg, stretch):
    s = small(seed, n_e=1, per=3)
    plan = schedule(s, "hierarchical", e_agg=e_agg, seed=seed)
    members, structures = _structures(s, plan, 0)
    datas = [cluster_data(s, set_structure(plan, s, 0, members, st_), 0) for st_ in structures]
    budget = min(least_period(d) for d in datas) * stretch / (1 - SAFETY)
    for d in datas:
        alloc = solve_cluster(d, budget)
        floor = structure_bound(d, budget)
        if alloc.certified:
            assert alloc.feasible == (least_period(d) <= budget * (1 - SAFETY))
        if alloc.feasible:
            assert floor <= alloc.energy_j * (1 + 1e-9)
            assert evaluate(s, set_structure(plan, s, 0, members, None)) is not None
        elif alloc.certified:
            assert floor == np.inf


@settings(max_examples=3, deadline=None, phases=[Phase.explicit, Phase.generate])
@given(seed=st.integers(0, 10_000), e_agg=st.sampled_from([2, 8]))
@example(seed=0, e_agg=2)  # greedy at the floor: the solvers' margin alone made F4 slower
def test_least_latency_is_certified_and_no_heuristic_is_faster(seed, e_agg):
    s = small(seed, n_e=2, per=3)
    model = joint_model(s, e_agg=e_agg, seed=seed, objective="latency")
    res = solve(model, "fast")
    assert res.status == Status.OPTIMAL and res.gap <= 1e-6
    m = evaluate(s, res.plan)
    assert res.objective == pytest.approx(m.latency_s, rel=1e-12)
    assert res.bound <= res.objective and res.stats["energy_j"] == pytest.approx(m.energy_j, rel=1e-9)
    for name in SAME_PROBLEM:  # the least latency reached, not only its floor: no margin above a heuristic's
        assert res.objective <= evaluate(s, schedule(s, name, e_agg=e_agg, seed=seed)).latency_s, name
    # just below the floor nothing is feasible; at the reached latency (plus the solvers' margin) the energy solve is
    assert optimise(model.at_target(res.bound * (1 - 1e-4))).status == Status.INFEASIBLE
    assert optimise(model.at_target(res.objective / (1 - SAFETY) * (1 + 1e-9))).ok


def test_a_large_cluster_gets_a_proven_floor_below_its_best_candidate():
    s = small(4, n_e=1, per=5)  # 5 devices: more structures than optimal enumerates
    start = joint_model(s, e_agg=2).start
    exact, floor = least_latency(s, start, float("inf")), least_latency(s, start, 0)
    assert exact.certified and not floor.certified
    assert floor.lower <= exact.lower * (1 + 1e-12) <= floor.upper * (1 + 1e-12)


def test_an_energy_budget_trades_latency_and_is_bracketed():
    s = small(7, n_e=1, per=3)
    fastest = solve(joint_model(s, e_agg=8, objective="latency"), "fast")
    budget = 0.85 * fastest.stats["energy_j"]
    res = solve(joint_model(s, e_agg=8, objective="latency", energy_budget_j=budget), "fast")
    assert res.ok and evaluate(s, res.plan).energy_j <= budget * (1 + 1e-9)
    assert fastest.objective < res.objective and res.bound <= res.objective
    assert res.gap <= 2e-3  # the bisection's tolerance
    # a target the bound calls over budget really is: F4's least energy there exceeds the budget
    assert optimise(joint_model(s, e_agg=8, target_latency_s=res.bound * 0.999)).objective > budget
    nothing = solve(joint_model(s, e_agg=8, objective="latency", energy_budget_j=1e-6), "fast")
    assert nothing.status == Status.INFEASIBLE and "energy_budget_j" in nothing.message


@pytest.mark.slow
def test_weighted_bound_is_below_every_point_and_the_objective():
    s = small(3, n_e=2, per=3)
    model = joint_model(s, e_agg=8, objective="weighted", w_latency=1.0, w_energy=2.0)
    res = solve(model, "fast")
    m = evaluate(s, res.plan)
    assert res.objective == pytest.approx(m.latency_s + 2.0 * m.energy_j, rel=1e-9)
    assert res.bound <= res.objective
    for target in np.linspace(res.bound / 3, 3 * m.latency_s, 5):
        other = optimise(joint_model(s, e_agg=8, target_latency_s=float(target)))
        if other.ok:
            assert res.bound <= other.metrics.latency_s + 2.0 * other.objective


def test_objective_data_are_checked_by_field():
    s = small(1, n_e=1, per=2)
    start = schedule(s, "hierarchical", e_agg=2)
    for kwargs, field in (({"objective": "fastest"}, "objective"), ({}, "target_latency_s"),
                          ({"objective": "latency", "energy_budget_j": -1.0}, "energy_budget_j"),
                          ({"objective": "weighted", "w_latency": 1.0}, "w_energy"),
                          ({"objective": "latency", "w_latency": 1.0}, "w_latency")):
        with pytest.raises(ConfigError, match=field):
            build_joint(s, start, None, **kwargs)
    with pytest.raises(ConfigError, match="target_latency_s = 1.0: only with objective 'energy'"):
        build_joint(s, start, 1.0, objective="latency")
