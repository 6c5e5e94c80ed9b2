"""Full F4's enumeration step against the exact mode, and the aggregator tier priced as ``evaluate`` prices it."""

import dataclasses

import numpy as np
import pytest
from conftest import tiny_scenario

from hffm_opt.evaluate import evaluate
from hffm_opt.formulations.cluster import cluster_data
from hffm_opt.formulations.placement import module_value
from hffm_opt.plan import AGG, EDGE
from hffm_opt.schedulers import schedule
from hffm_opt.schedulers.optimising import joint_model
from hffm_opt.solvers import solve
from hffm_opt.solvers.f4.alternation import alternate, meets_coverage
from hffm_opt.solvers.f4.cluster import apply_allocation, solve_cluster, tree_costs
from hffm_opt.solvers.f4.enumeration import price_cluster
from hffm_opt.solvers.f4.structures import set_structure

TRAINED = ("head:vqa", "expert:0")


def two_modules(sc):
    """``sc`` with only :data:`TRAINED` trainable (three module sets per device)."""
    return sc.replace(modules=tuple(dataclasses.replace(m, trainable=m.name in TRAINED) for m in sc.modules))


def d2d_clusters(seed: int, sizes=(2, 2)):
    """Clusters of ``sizes`` devices with D2D links 3-30x stronger than the uplinks (gains drawn from ``seed``)."""
    rng = np.random.default_rng(seed)
    n = sum(sizes)
    sc = tiny_scenario(sizes, gains=10 ** rng.uniform(-10.3, -9.7, n), d2d_gain=10 ** rng.uniform(-9.5, -8.5),
                       samples=rng.integers(50, 200, (n, 2)))
    return two_modules(sc)


def score(sc, plan, w_U):
    return evaluate(sc, plan).energy_j - w_U * float((module_value(sc) * plan.train).sum())


@pytest.mark.parametrize("seed, options", [
    (0, dict(coverage="cluster")),
    pytest.param(1, dict(coverage="cluster", w_U=0.02), marks=pytest.mark.slow),
    (2, dict(edge_tiers=True)),
    pytest.param(3, dict(coverage="cluster", w_U=0.01, edge_tiers=True), marks=pytest.mark.slow),
])
def test_every_cluster_enumerated_matches_exact(seed, options):
    sc = d2d_clusters(seed)
    model = joint_model(sc, e_agg=2, target_from="hierarchical", **options)
    exact, f4 = solve(model, "exact"), solve(model, "fast")
    assert exact.ok and f4.ok, (exact.message, f4.message)
    assert f4.stats["start_clusters_enumerated"] == sc.n_edges
    w_U, target = model.w_U, model.target_latency_s
    best = score(sc, exact.plan, w_U)
    assert score(sc, f4.plan, w_U) == pytest.approx(best, rel=1e-6)
    m = evaluate(sc, f4.plan)
    assert m.latency_s <= target * (1 + 1e-6) and m.energy_j == pytest.approx(f4.objective, rel=1e-9)
    assert meets_coverage(model, f4.plan)
    fixed = solve(joint_model(sc, e_agg=2, target_from="hierarchical"), "fast")  # placement and tiers of the start
    assert score(sc, f4.plan, w_U) <= score(sc, fixed.plan, w_U) * (1 + 1e-9)
    assert f4.status == exact.status  # optimal exactly where every inner problem was proven
    if f4.status == "optimal":
        assert f4.bound == (f4.objective if w_U == 0 else None)  # a bound on the energy only where it is the score


def test_aggregator_tier_is_chosen_where_it_is_cheaper():
    """Weak uplinks, strong D2D links, no edge downlink cost: keeping the modules at the aggregator spares its
    upload for a broadcast down the tree, and both F4 and exact take it."""
    sc = two_modules(tiny_scenario((3,), gains=1e-11, d2d_gain=1e-8))
    model = joint_model(sc, e_agg=2, target_from="hierarchical", edge_tiers=True)
    f4, exact = solve(model, "fast"), solve(model, "exact")
    assert (f4.plan.tier == AGG).any() and f4.stats["aggregator_tier_modules"] > 0
    assert score(sc, f4.plan, 0.0) == pytest.approx(score(sc, exact.plan, 0.0), rel=1e-6)
    m = evaluate(sc, f4.plan)
    assert m.latency_s <= model.target_latency_s * (1 + 1e-6) and m.energy_j == pytest.approx(f4.objective, rel=1e-9)
    edge_tier = f4.plan.replace(tier=np.where(f4.plan.tier == AGG, EDGE, f4.plan.tier))
    budget = 2 * model.target_latency_s
    with_agg = price_cluster(sc, edge_tier, 0, budget, np.ones(len(sc.modules), bool))[0]
    edge_only = price_cluster(sc, edge_tier, 0, budget, np.zeros(len(sc.modules), bool))[0]
    assert with_agg.energy_j < 0.9 * edge_only.energy_j


@pytest.mark.parametrize("e_agg, parent", [(1, [-1, 0, 1]), (3, [-1, 0, 1]), (3, [-1, 0, 0])])
def test_tree_with_aggregator_tier_is_priced_as_evaluate_prices_it(e_agg, parent):
    """The cluster step's program and its read-back price the last-round broadcast of aggregator-tier modules (next
    to the edge downlink, here with a power) exactly as the evaluator does."""
    sc = two_modules(tiny_scenario((3,), gains=1e-11, d2d_gain=1e-9))
    sc = sc.replace(edges=dataclasses.replace(sc.edges, downlink_power_w=np.ones(1)))
    start = schedule(sc, "hierarchical", e_agg=e_agg)
    budget = 1.5 * float(evaluate(sc, start).cluster_period_s.max())
    k = sc.module_names.index("head:vqa")
    tier = start.tier.copy()
    tier[0, k] = AGG
    members = np.arange(3)
    plan = set_structure(start.replace(tier=tier), sc, 0, members, (0, np.array(parent)))
    data = cluster_data(sc, plan, 0)
    assert data.last_bits[1:].min() > 0 and data.agg_bits < data.edge_bits + 1
    alloc = solve_cluster(data, budget)
    assert alloc.feasible, alloc.message
    m = evaluate(sc, apply_allocation(plan, {0: (members, alloc)}))
    period, energy = tree_costs(data, alloc)
    assert period == pytest.approx(m.cluster_period_s[0], rel=1e-9) and period <= budget
    assert energy == pytest.approx(m.cluster_energy_j[0], rel=1e-9) == pytest.approx(alloc.energy_j, rel=1e-5)


def test_without_enumeration_no_optimality_is_claimed():
    sc = d2d_clusters(0)
    model = joint_model(sc, e_agg=2, target_from="hierarchical", coverage="cluster")
    res = alternate(model, cluster_choices_limit=0)
    assert res.stats.get("clusters_enumerated", 0) == 0 and res.status == "feasible"
    assert res.bound <= solve(model, "exact").objective * (1 + 1e-9)  # the relaxation's bound, not optimality
    assert score(sc, res.plan, 0.0) <= score(sc, model.start, 0.0)
    assert meets_coverage(model, res.plan)


def test_coverage_rule_is_checked_per_cluster():
    sc = d2d_clusters(0)
    model = joint_model(sc, e_agg=2, target_from="hierarchical", coverage="cluster")
    k = sc.module_names.index("expert:0")
    train = model.start.train.copy()
    train[:2, k] = False  # nobody in the first cluster trains the expert
    assert meets_coverage(model, model.start) and not meets_coverage(model, model.start.replace(train=train))


def test_f1_keeps_modules_at_the_aggregator_without_enumeration():
    """Weak uplinks, strong D2D links: with the enumeration switched off, F1 puts the modules at the aggregator tier
    (its figures reproduced by ``evaluate``), and the result scores no worse than with the enumeration on."""
    sc = two_modules(tiny_scenario((3, 3), gains=1e-11, d2d_gain=1e-8))
    model = joint_model(sc, e_agg=2, target_from="hierarchical", edge_tiers=True)
    off, on = alternate(model, cluster_choices_limit=0), alternate(model)
    assert off.stats.get("clusters_enumerated", 0) == 0 and on.stats["start_clusters_enumerated"] == sc.n_edges
    assert off.stats["f1_solves"] > 0 and off.stats["f1_agrees"]
    assert off.stats["aggregator_tier_modules"] > 0 and (off.plan.tier[off.plan.uses_d2d] == AGG).any()
    assert score(sc, off.plan, 0.0) <= score(sc, on.plan, 0.0) * (1 + 1e-6)
    m = evaluate(sc, off.plan)
    assert m.latency_s <= model.target_latency_s * (1 + 1e-6) and m.energy_j == pytest.approx(off.objective, rel=1e-9)


def test_direct_structure_sends_aggregator_tier_modules_to_the_edge():
    sc = two_modules(tiny_scenario((3,), gains=1e-11, d2d_gain=1e-8))
    start = schedule(sc, "hierarchical", e_agg=2)
    members = np.arange(3)
    tier = start.tier.copy()
    tier[0, sc.module_names.index("head:vqa")] = AGG
    tree = set_structure(start.replace(tier=tier), sc, 0, members, (0, np.array([-1, 0, 0])))
    direct = set_structure(tree, sc, 0, members, None)
    assert (tree.tier == tier).all() and not (direct.tier == AGG).any()
    assert (direct.tier[tier != AGG] == tier[tier != AGG]).all() and (direct.tier[tier == AGG] == EDGE).all()
    evaluate(sc, direct)  # a valid plan: no aggregator tier without an aggregator
