"""Full F4 (placement, tiers, association) against its exact mode on small instances, monotonicity, options."""


import numpy as np
import pytest
from conftest import small_clustered, two_by_two

from hffm_opt.errors import InstanceTooLarge, SchedulerError
from hffm_opt.evaluate import evaluate
from hffm_opt.formulations.joint import covers, edge_allowed
from hffm_opt.formulations.placement import build_f4_placement, module_value
from hffm_opt.schedulers import schedule
from hffm_opt.schedulers.optimising import START_SCHEDULERS, joint_model
from hffm_opt.solvers import solve
from hffm_opt.solvers.f4.alternation import Inner, _placement
from hffm_opt.solvers.f4.enumeration import exact_full
from hffm_opt.solvers.milp import solve_milp


def score(sc, plan, w_U):
    return evaluate(sc, plan).energy_j - w_U * float((module_value(sc) * plan.train).sum())


def check_against_exact(sc, certified=True, **full):
    model = joint_model(sc, e_agg=2, target_from="hierarchical", **full)
    w_U = model.w_U
    exact, f4 = solve(model, "exact"), solve(model, "fast")
    # an uncertified inner (conic) solve of a D2D tree leaves exact "feasible": every choice was still enumerated
    assert exact.status == "optimal" if certified else exact.status in ("optimal", "feasible"), exact.message
    assert f4.ok, f4.message
    target = model.target_latency_s
    for res in (exact, f4):
        m = evaluate(sc, res.plan)
        assert m.latency_s <= target * (1 + 1e-6)
        assert m.energy_j == pytest.approx(res.objective, rel=1e-9)
    best = score(sc, exact.plan, w_U)
    assert score(sc, f4.plan, w_U) >= best - 1e-9 * abs(best)
    if f4.bound is not None:  # a claimed bound holds and the optimum lies within the reported gap
        assert f4.bound <= exact.objective * (1 + 1e-6)
        assert (f4.objective - exact.objective) <= f4.gap * abs(f4.objective) + 1e-9
    for name in START_SCHEDULERS:  # exact is at least as good as every heuristic that meets the target
        plan = schedule(sc, name, e_agg=2)
        if evaluate(sc, plan).latency_s <= target:
            assert best <= score(sc, plan, w_U) + 1e-9
    start = score(sc, model.start, w_U)  # F4 never worse than its start
    assert score(sc, f4.plan, w_U) <= start + 1e-9 * abs(start)
    return exact, f4


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_f4_against_exact_with_placement_and_association_free(seed):
    sc = two_by_two(d2d=False, seed=seed)
    exact, f4 = check_against_exact(sc, coverage="cluster", w_U=0.0, association="optimise")
    assert exact.stats["choices"] == 2 ** 4 * 3 ** 4  # 2 edges and 3 module sets per device
    assert exact.plan.train.sum() < 8  # one trainer per module and cluster is cheaper than full training


@pytest.mark.slow
def test_f4_against_exact_with_utility_weight():
    sc = two_by_two(d2d=False, seed=2)
    exact, _ = check_against_exact(sc, coverage="cluster", w_U=2.0, association="optimise")
    heavy = joint_model(sc, e_agg=2, coverage="cluster", w_U=1e4, association="fixed")
    assert solve(heavy, "exact").plan.train.sum() == 8  # utility worth any energy: every module trained


def test_f4_against_exact_with_d2d_edge_tiers_and_association():
    sc = two_by_two(d2d=True, seed=3)
    exact, f4 = check_against_exact(sc, certified=False, edge_tiers=True, association="optimise")
    assert evaluate(sc, exact.plan).energy_by_part["backhaul"] == 0.0
    assert evaluate(sc, f4.plan).energy_by_part["backhaul"] == 0.0


def test_exact_refuses_large_instances_with_the_count():
    sc = small_clustered(0, n_e=3, per=4)
    model = joint_model(sc, e_agg=2, coverage="cluster", association="optimise")
    with pytest.raises(InstanceTooLarge, match=r"exact mode = \d\.\d\de\+\d+ association x module-assignment "
                                              r"choices: above the limit"):  # > 15 digits: 3 significant ones
        exact_full(model)
    res = solve(model, "exact")
    assert res.status == "error" and "above the limit" in res.message


@pytest.mark.parametrize("options", [dict(association="optimise"), dict(edge_tiers=True),
                                     dict(coverage="cluster", w_U=0.5, association="optimise")])
def test_optimal_is_monotone_and_meets_the_target(options):
    sc = small_clustered(1, n_e=2, per=3)
    model = joint_model(sc, e_agg=2, **options)
    fixed = schedule(sc, "optimal", e_agg=2, solver="fast", association="fixed")
    plan = schedule(sc, "optimal", e_agg=2, solver="fast", **options)
    m = evaluate(sc, plan)
    assert m.latency_s <= model.target_latency_s * (1 + 1e-6)
    w_U = options.get("w_U", 0.0)
    assert score(sc, plan, w_U) <= score(sc, fixed, w_U) + 1e-9 * evaluate(sc, fixed).energy_j
    assert score(sc, plan, w_U) <= score(sc, model.start, w_U)
    assert plan.meta["iterations"] >= 1
    if options.get("edge_tiers"):
        assert m.energy_by_part["backhaul"] == 0.0 and m.energy_j < evaluate(sc, fixed).energy_j


def test_same_inputs_same_plan():
    sc = small_clustered(1, n_e=2, per=3)
    a = schedule(sc, "optimal", e_agg=2, solver="fast", coverage="cluster")
    b = schedule(sc, "optimal", e_agg=2, solver="fast", coverage="cluster")
    for f in ("association", "train", "tier", "aggregator", "parent", "bandwidth_hz", "power_w", "cpu_hz"):
        assert np.array_equal(getattr(a, f), getattr(b, f)), f


def test_e_aggs_pick_the_least_energy_per_edge_round_at_the_target():
    sc = small_clustered(1, n_e=2, per=2)
    target = evaluate(sc, schedule(sc, "hierarchical-d2d", e_agg=2)).latency_s
    plan = schedule(sc, "optimal", e_agg=2, solver="fast", association="fixed", e_aggs=(1, 2, 4))
    tried = plan.meta["e_aggs"]
    assert set(tried) == {"1", "2", "4"}
    ok = {g: v for g, v in tried.items() if v is not None}
    assert str(plan.e_agg) in ok and evaluate(sc, plan).energy_j == pytest.approx(min(ok.values()), rel=1e-9)
    assert evaluate(sc, plan).latency_s <= target * (1 + 1e-6)


@pytest.mark.parametrize("options, field", [
    ({"coverage": "some"}, "coverage"), ({"association": "best"}, "association"), ({"w_U": -1.0}, "w_U"),
    ({"w_U": 1.0}, "w_U"), ({"min_trainers": 0}, "min_trainers"), ({"assoc_candidates": 0}, "assoc_candidates"),
    ({"edge_tiers": "yes"}, "edge_tiers"), ({"max_iterations": 0}, "max_iterations"),
    ({"tolerance": float("nan")}, "tolerance"), ({"e_aggs": ()}, "e_aggs"), ({"e_aggs": (0, 2)}, "e_aggs"),
])
def test_bad_full_options_are_refused_by_name(options, field):
    with pytest.raises(SchedulerError, match=field):
        schedule(small_clustered(1, n_e=1, per=2), "optimal", **options)


def test_f1_cluster_by_cluster_equals_f1_over_all_clusters():
    """F1's objective and rows separate by cluster: the per-cluster programs of the placement step reach the
    optimum of the one program over every cluster (both to a 1e-4 gap)."""
    sc = small_clustered(1, n_e=3, per=3)
    model = joint_model(sc, e_agg=2, coverage="cluster", edge_tiers=True)
    plan, budget, edges = model.start, 2 * model.target_latency_s, np.arange(sc.n_edges)
    info = {}
    merged = _placement(model, plan, edges, budget, Inner(), info)
    assert info["f1_solves"] == sc.n_edges and "f1_failures" not in info
    whole = solve_milp(build_f4_placement(sc, plan, budget, coverage="cluster", edge_ok=edge_allowed(sc, True)),
                       mip_gap=1e-4)
    assert whole.ok and merged["energy_j"].sum() / 2 == pytest.approx(whole.objective, rel=2e-4)
    assert covers(sc, np.arange(sc.n_devices), plan.association, merged["train"], 1)
