"""F4 and its inner problems: plans are valid, meet the target, beat every heuristic, match exact enumeration."""

import numpy as np
import pytest
from conftest import small_clustered as small
from conftest import tiny_scenario
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from hffm_opt.errors import InstanceTooLarge
from hffm_opt.evaluate import evaluate
from hffm_opt.formulations.cluster import cluster_data
from hffm_opt.formulations.joint import build_joint
from hffm_opt.network import generators
from hffm_opt.network.channel import link_energy
from hffm_opt.schedulers import schedule
from hffm_opt.schedulers.optimising import joint_model
from hffm_opt.solvers import Status
from hffm_opt.solvers.f4.cluster import optimise_continuous, solve_direct
from hffm_opt.solvers.f4.decomposition import improve, optimise
from hffm_opt.solvers.f4.structures import cluster_exact_choices


@settings(max_examples=6, deadline=None, phases=[Phase.explicit, Phase.generate])
@given(seed=st.integers(0, 10_000), e_agg=st.sampled_from([1, 2, 8]))
def test_optimal_is_valid_meets_target_and_is_within_1pct_of_exact(seed, e_agg):
    s = small(seed)
    model = joint_model(s, e_agg=e_agg, seed=seed)
    opt, ex = optimise(model, exact_cluster_limit=0), optimise(model, exact=True)  # heuristic search vs enumeration
    for res in (opt, ex):
        m = evaluate(s, res.plan)  # raises PlanError if anything is violated
        assert m.latency_s <= model.target_latency_s * (1 + 1e-9)
        assert m.energy_j == pytest.approx(res.objective)
    assert ex.objective <= opt.objective * (1 + 1e-6)  # exact is the optimum
    assert opt.objective <= ex.objective * 1.01
    assert ex.status == Status.OPTIMAL and ex.gap == 0.0
    assert opt.bound <= ex.objective * (1 + 1e-9)  # the relaxation bound is a valid lower bound on the optimum
    assert opt.gap == pytest.approx((opt.objective - opt.bound) / opt.objective)


# (the dominance of every heuristic at its own latency: test_f4_dominance.py)


def test_direct_cluster_block_descent_matches_a_grid_search():
    # one device: choose the compute/upload split of the round by hand on a fine grid
    s = small(3, n_e=1, per=1)
    plan = schedule(s, "hierarchical", e_agg=1)
    d = cluster_data(s, plan, 0)
    budget = 1.5 * evaluate(s, plan).period_latency_s
    alloc = solve_direct(d, budget)
    round_s = budget * (1 - 1e-6) - d.fixed_s
    tau = np.linspace(d.cycles[0] / d.fmax[0], round_s * 0.999, 200_001)
    energy = d.kappa[0] * d.cycles[0] ** 3 / tau ** 2 + link_energy(d.up_bits[0], round_s - tau, d.band_hz,
                                                                    d.up_gain[0], d.noise)
    assert alloc.energy_j == pytest.approx(energy.min() + d.fixed_j, rel=1e-9)


def test_inner_energy_equals_the_evaluator_on_the_paper_scenario(paper):
    for name in ("hierarchical", "hierarchical-d2d"):
        plan = schedule(paper, name, e_agg=8)
        lat = evaluate(paper, plan).period_latency_s
        new, energy, problems = optimise_continuous(paper, plan, lat)
        assert not problems
        m = evaluate(paper, new)
        assert m.period_energy_j == pytest.approx(energy, rel=1e-6)
        assert m.period_latency_s <= lat * (1 + 1e-9)
        assert m.period_energy_j < evaluate(paper, plan).period_energy_j  # same structure, optimal continuous part


def test_local_search_never_worse_than_its_start():
    s = small(5, n_e=2, per=4)
    start = schedule(s, "random", e_agg=2, seed=1)
    m0 = evaluate(s, start)
    res = improve(build_joint(s, start, m0.latency_s))
    assert res.metrics.latency_s <= m0.latency_s * (1 + 1e-9)
    assert res.objective <= m0.energy_j * (1 + 1e-9)


def test_exact_refuses_large_instances_with_the_count(paper):
    with pytest.raises(InstanceTooLarge, match=r"exact mode = \d+ discrete choices"):
        optimise(joint_model(generators.clustered(2, 9, seed=0), e_agg=2), exact=True)


def test_an_unreachable_target_is_reported_not_hidden():
    s = small(2)
    start = schedule(s, "hierarchical", e_agg=2)
    res = optimise(build_joint(s, start, 1e-3))
    assert res.status == Status.INFEASIBLE and "no structure meets" in res.message and res.objective is None


@settings(max_examples=4, deadline=None, phases=[Phase.explicit, Phase.generate])
@given(seed=st.integers(0, 10_000), e_agg=st.sampled_from([2, 8]))
def test_the_fixed_part_is_what_evaluate_charges_for_backhaul_and_one_downlink(seed, e_agg):
    s = small(seed, n_e=2, per=3)
    model = joint_model(s, e_agg=e_agg, seed=seed)
    res = optimise(model)
    d2d_everywhere = schedule(s, "hierarchical-d2d", e_agg=e_agg, seed=seed)  # one edge downlink per period
    assert d2d_everywhere.uses_d2d.all()
    parts = evaluate(s, d2d_everywhere).energy_by_part
    assert res.fixed_objective == pytest.approx((parts["backhaul"] + parts["downlink"]) / e_agg, rel=1e-12)
    assert res.fixed_objective <= res.bound * (1 + 1e-9) <= res.objective * (1 + 1e-9)
    assert res.gap_controllable == pytest.approx((res.objective - res.bound) / (res.objective - res.fixed_objective))
    assert res.gap_controllable >= res.gap


@settings(max_examples=4, deadline=None, phases=[Phase.explicit, Phase.generate])
@given(seed=st.integers(0, 10_000), e_agg=st.sampled_from([1, 2, 8]))
def test_small_clusters_are_certified_by_enumeration_inside_optimal(seed, e_agg):
    s = small(seed, n_e=3, per=3)
    model = joint_model(s, e_agg=e_agg, seed=seed)
    res, ex = optimise(model), optimise(model, exact=True)
    assert res.status == Status.OPTIMAL and res.stats["clusters_certified"] == s.n_edges
    assert res.objective == pytest.approx(ex.objective, rel=1e-9) and res.gap_controllable <= 1e-6


@pytest.mark.parametrize("e_agg", [2, 8])
def test_a_mix_of_certified_and_relaxed_clusters_bounds_the_optimum(e_agg):
    s = tiny_scenario((2, 4, 3))  # complete D2D graphs: 3, 109 and 13 structures
    model = joint_model(s, e_agg=e_agg)
    limit = cluster_exact_choices(s, np.flatnonzero(s.devices.edge == 2))
    mixed, ex = optimise(model, exact_cluster_limit=limit), optimise(model, exact=True)
    assert mixed.status == Status.FEASIBLE and mixed.stats["clusters_certified"] == 2
    assert mixed.bound <= ex.objective * (1 + 1e-9) <= mixed.objective * (1 + 1e-9)
    assert optimise(model, exact_cluster_limit=0).bound <= mixed.bound * (1 + 1e-12)  # certified parts tighten it
