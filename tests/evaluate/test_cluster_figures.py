"""The evaluator's per-cluster figures: each cluster's period latency and energy equal the evaluator's figures of
a plan where only that cluster trains, they sum (energy) and peak (latency) to the whole period's."""

import pytest
from conftest import small_clustered
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from hffm_opt import evaluate, schedule
from hffm_opt.errors import PlanError

NAMES = ["hierarchical", "hierarchical-d2d", "greedy", "random", "edge-only", "edge-only-d2d", "star", "local-search"]


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), name=st.sampled_from(NAMES), e_agg=st.sampled_from([1, 2, 5]),
       deadline=st.sampled_from([None, 0.7]))
def test_each_clusters_figures_are_what_it_costs_alone(seed, name, e_agg, deadline):
    s = small_clustered(seed, n_e=3, per=3)
    plan = schedule(s, name, e_agg=e_agg, seed=seed)
    if deadline is not None:  # a deadline that may leave some devices behind (stragglers)
        plan = plan.replace(deadline_s=deadline * evaluate(s, plan).latency_s)
    try:
        m = evaluate(s, plan)
    except PlanError:  # every trainer misses that deadline: no figures to compare
        assume(False)
    assert m.cluster_energy_j.sum() == pytest.approx(m.period_energy_j, rel=1e-12)
    assert m.cluster_period_s.max() == pytest.approx(m.period_latency_s, rel=1e-12)
    for e in range(s.n_edges):
        mask = plan.association == e
        if not (mask & plan.train.any(axis=1) & m.participants).any():
            continue  # every trainer of this cluster misses the deadline: evaluate refuses such a plan alone
        alone = evaluate(s, plan.replace(train=plan.train & mask[:, None]))
        assert m.cluster_period_s[e] == pytest.approx(alone.period_latency_s, rel=1e-12, abs=1e-15)
        assert m.cluster_energy_j[e] == pytest.approx(alone.period_energy_j, rel=1e-12, abs=1e-15)


def test_the_paper_accounting_has_no_per_cluster_figures(paper):
    m = evaluate(paper, schedule(paper, "hierarchical-d2d", e_agg=2), "paper")
    assert m.cluster_period_s is None and m.cluster_energy_j is None
