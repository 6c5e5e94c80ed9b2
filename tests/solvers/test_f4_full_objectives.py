"""Full F4 (free placement, tiers or association) under the least-latency and weighted objectives."""

import pytest
from conftest import small_clustered

from hffm_opt.errors import SchedulerError
from hffm_opt.evaluate import evaluate
from hffm_opt.schedulers import schedule


def test_least_latency_with_edge_tiers_goes_below_the_start_placements_floor():
    """Edge tiers drop the backhaul transfer, so the least latency falls below the fixed placement's (certified)
    one; the floor claimed is proven over every tier choice."""
    sc = small_clustered(1, n_e=2, per=3)
    fixed = schedule(sc, "optimal", e_agg=2, solver="fast", objective="latency")
    free = schedule(sc, "optimal", e_agg=2, solver="fast", objective="latency", edge_tiers=True)
    m_fixed, m_free = evaluate(sc, fixed), evaluate(sc, free)
    assert m_free.latency_s < fixed.meta["bound"] <= m_fixed.latency_s
    assert m_free.energy_by_part["backhaul"] == 0.0 < m_fixed.energy_by_part["backhaul"]  # the tiers were used
    assert free.meta["objective"] == pytest.approx(m_free.latency_s, rel=1e-12)
    assert free.meta["status"] == "feasible" and 0 < free.meta["bound"] <= m_free.latency_s
    assert fixed.meta["status"] == "optimal"


def test_least_latency_with_the_association_free_claims_no_floor():
    sc = small_clustered(1, n_e=2, per=2)
    free = schedule(sc, "optimal", e_agg=2, solver="fast", objective="latency", association="optimise")
    assert free.meta["bound"] is None and free.meta["status"] == "feasible"


def test_weighted_with_free_coverage_is_no_worse_than_fixed():
    sc = small_clustered(2, n_e=2, per=3)
    weights = {"objective": "weighted", "w_latency": 1.0, "w_energy": 0.5}
    fixed = schedule(sc, "optimal", e_agg=2, solver="fast", **weights)
    free = schedule(sc, "optimal", e_agg=2, solver="fast", coverage="cluster", **weights)

    def value(plan):
        m = evaluate(sc, plan)
        return weights["w_latency"] * m.latency_s + weights["w_energy"] * m.energy_j

    assert free.meta["objective"] == pytest.approx(value(free), rel=1e-9)
    assert value(free) <= value(fixed) * (1 + 1e-6)
    assert 0 < free.meta["bound"] <= value(free)


def test_exact_full_f4_and_utility_weight_are_refused_outside_the_energy_objective():
    sc = small_clustered(1, n_e=1, per=2)
    with pytest.raises(SchedulerError, match="energy objective only"):
        schedule(sc, "optimal-exact", objective="latency", edge_tiers=True)
    with pytest.raises(SchedulerError, match="w_U = 1.0: only with the energy objective"):
        schedule(sc, "optimal", objective="latency", coverage="cluster", w_U=1.0)
