"""Full F4 (free placement, tiers or association) under the least-latency and weighted objectives."""

import pytest
from conftest import small_clustered

from hffm_opt.errors import SchedulerError
from hffm_opt.evaluate import evaluate
from hffm_opt.schedulers import schedule


def test_least_latency_with_edge_tiers_keeps_the_latency_and_never_costs_more():
    """At the start placement's least latency, the alternation spends no more energy than the fixed placement (it
    starts from that solve at the same target), and it claims no bound."""
    sc = small_clustered(1, n_e=2, per=3)
    fixed = schedule(sc, "optimal", e_agg=2, solver="fast", objective="latency")
    free = schedule(sc, "optimal", e_agg=2, solver="fast", objective="latency", edge_tiers=True)
    m_fixed, m_free = evaluate(sc, fixed), evaluate(sc, free)
    assert m_free.latency_s == pytest.approx(m_fixed.latency_s, rel=1e-6)
    assert m_free.energy_j <= m_fixed.energy_j * (1 + 1e-9)
    assert m_free.energy_by_part["backhaul"] == 0.0 < m_fixed.energy_by_part["backhaul"]  # the tiers were used
    assert free.meta["status"] == "feasible" and free.meta["bound"] is None
    assert fixed.meta["status"] == "optimal"


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
    assert free.meta["bound"] is None


def test_exact_full_f4_and_utility_weight_are_refused_outside_the_energy_objective():
    sc = small_clustered(1, n_e=1, per=2)
    with pytest.raises(SchedulerError, match="energy objective only"):
        schedule(sc, "optimal-exact", objective="latency", edge_tiers=True)
    with pytest.raises(SchedulerError, match="w_U = 1.0: only with the energy objective"):
        schedule(sc, "optimal", objective="latency", coverage="cluster", w_U=1.0)
