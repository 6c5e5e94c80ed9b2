"""The proven bound of full F4 with the association free: never above the exact optimum over every association
(the exact mode enumerates them), also with D2D trees and edge tiers; its least fixed energy is a set cover of the
edges; full F4's result carries it."""

import numpy as np
import pytest
from conftest import small_clustered, two_by_two
from hypothesis import given, settings
from hypothesis import strategies as st

from hffm_opt.evaluate import evaluate
from hffm_opt.formulations.cluster import cluster_data
from hffm_opt.formulations.joint import candidate_edges
from hffm_opt.schedulers.optimising import joint_model
from hffm_opt.solvers import solve
from hffm_opt.solvers.f4.association_bound import association_bound
from hffm_opt.solvers.f4.bounds import fixed_energy


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 1000), d2d=st.booleans(), edge_tiers=st.booleans(), e_agg=st.sampled_from([1, 2, 8]))
def test_the_bound_never_exceeds_the_optimum_over_every_association(seed, d2d, edge_tiers, e_agg):
    sc = two_by_two(d2d=d2d, seed=seed)
    model = joint_model(sc, e_agg=e_agg, target_from="hierarchical", association="optimise", edge_tiers=edge_tiers)
    exact, f4 = solve(model, "exact"), solve(model, "fast")
    assert exact.ok and f4.ok, (exact.message, f4.message)
    candidates = candidate_edges(sc, model.assoc_candidates)
    bound, fixed = association_bound(sc, model.start, e_agg * model.target_latency_s, candidates, edge_tiers)
    assert bound <= exact.objective * (1 + 1e-6)
    assert fixed <= fixed_energy(sc, exact.plan) * (1 + 1e-9)  # the least any association pays, exact's included
    assert f4.bound is not None and f4.bound <= exact.objective * (1 + 1e-6)
    assert f4.fixed_objective <= fixed_energy(sc, exact.plan) * (1 + 1e-9)
    assert evaluate(sc, f4.plan).energy_j == pytest.approx(f4.objective, rel=1e-9)


def test_the_least_fixed_energy_covers_every_device_with_open_edges():
    """Priced against the evaluator's own clusters (cluster_data): every device at home pays every used edge's
    backhaul; free to go anywhere, the single cheapest edge's (every device trains the same modules here, and the
    generator's edges have no downlink power, so an edge's fixed energy is its backhaul alone)."""
    sc = small_clustered(2, n_e=3, per=2)
    assert (sc.edges.downlink_power_w == 0).all()
    model = joint_model(sc, e_agg=2, association="optimise")
    plan = solve(model, "fast").plan
    budget = 2 * model.target_latency_s
    per_edge = np.array([sc.edges.backhaul_power_w[e] * cluster_data(sc, plan, e).backhaul_s
                         for e in range(sc.n_edges)])
    home = np.zeros((sc.n_devices, sc.n_edges), bool)
    home[np.arange(sc.n_devices), plan.association] = True
    assert association_bound(sc, plan, budget, home, False)[1] == pytest.approx(fixed_energy(sc, plan))
    assert fixed_energy(sc, plan) == pytest.approx(per_edge[np.unique(plan.association)].sum() / 2)
    anywhere = np.ones_like(home)
    assert association_bound(sc, plan, budget, anywhere, False)[1] == pytest.approx(per_edge.min() / 2)


def test_a_budget_no_device_can_meet_gives_an_infinite_bound():
    sc = small_clustered(0, n_e=2, per=2)
    plan = solve(joint_model(sc, e_agg=2, association="optimise"), "fast").plan
    candidates = candidate_edges(sc, 2)
    assert association_bound(sc, plan, 1e-9, candidates, False)[0] == float("inf")
