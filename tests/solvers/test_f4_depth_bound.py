"""The relay-depth tightening of the tree bound: never above the best tree priced exactly, never below the plain
split-period bound, and strictly above it where members are far from every root."""

import numpy as np
import pytest
from conftest import small_clustered
from hypothesis import given, settings
from hypothesis import strategies as st
from test_f4_bounds import _tree_optimum

from hffm_opt.evaluate import evaluate
from hffm_opt.formulations.cluster import cluster_data
from hffm_opt.network import generators, trees
from hffm_opt.network.channel import shannon_rate
from hffm_opt.schedulers import schedule
from hffm_opt.solvers.f4 import bounds
from hffm_opt.solvers.f4.depth_bound import DepthBound


def _both(s, plan, budget, monkeypatch):
    """(depth-aware, plain) tree bounds (J per period) of cluster 0 without D2D."""
    d = cluster_data(s, plan.replace(aggregator=np.full(s.n_edges, -1), parent=np.full(s.n_devices, -1)), 0)
    deep = bounds.tree_lower_bound(s, d, budget)
    with monkeypatch.context() as m:
        m.setattr(bounds, "DEPTH_MAX_N", 0)
        plain = bounds.tree_lower_bound(s, d, budget)
    return deep, plain, d


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 10_000), e_agg=st.sampled_from([2, 8]), per=st.integers(3, 4),
       slack=st.sampled_from([1.0, 1.3, 3.0]))
def test_the_depth_bound_lies_between_the_plain_bound_and_the_best_tree(seed, e_agg, per, slack):
    s = small_clustered(seed, n_e=1, per=per)
    plan = schedule(s, "hierarchical-d2d", e_agg=e_agg, seed=seed)
    budget = slack * evaluate(s, plan).period_latency_s
    with pytest.MonkeyPatch.context() as monkeypatch:
        deep, plain, _ = _both(s, plan, budget, monkeypatch)
    assert plain <= deep * (1 + 1e-12)
    assert deep <= _tree_optimum(s, plan, 0, budget) * (1 + 1e-9)


def test_members_far_from_the_root_raise_the_bound_below_a_priced_plan(monkeypatch):
    """12 devices around one edge server: the plain relaxation lets each send one hop at its best link's gain
    within the whole up phase and receive within the whole down phase; counting the least time of the parent's
    path closes about three quarters of its gap to the optimiser's plan on the controllable energy."""
    s = generators.clustered(1, 12, seed=0)
    plan = schedule(s, "optimal", e_agg=8, seed=0)
    m = evaluate(s, plan)
    deep, plain, d = _both(s, plan, m.period_latency_s, monkeypatch)
    priced = m.energy_j * plan.e_agg
    assert plain < deep <= priced * (1 + 1e-9)
    assert (priced - deep) < 0.5 * (priced - plain)


@pytest.mark.parametrize("n, seed", [(40, 2), (60, 0)])
def test_every_path_of_a_relay_tree_at_full_power_takes_at_least_its_floor_and_some_take_it(n, seed):
    """The lemma the tightening rests on, on the optimiser's own trees (depth 2): at full power on every link (the
    fastest any allocation sends), the time from a member's parent up to the root, and from the root down to it,
    is never below the shortest path in least hop times, and equals it where the tree's path is that path."""
    s = generators.clustered(1, n, seed=seed)
    plan = schedule(s, "optimal", e_agg=8, seed=seed)
    d = cluster_data(s, plan, 0)
    direct = cluster_data(s, plan.replace(aggregator=np.full(1, -1), parent=np.full(s.n_devices, -1)), 0)
    floors = DepthBound(s, direct, 1.0, 2.0, bounds.split_energy)
    child, depth = d.parent >= 0, trees.depths(d.parent, np.ones(n, bool), np.array([d.root]))
    assert depth.max() >= 2
    with np.errstate(divide="ignore", invalid="ignore"):
        up = np.where(child, d.up_bits / shannon_rate(d.d2d_band_hz, d.pmax, d.up_gain, d.noise), 0.0)
        down = np.where(child, d.down_bits / shannon_rate(d.d2d_band_hz, d.down_pmax, d.down_gain, d.noise), 0.0)
    climb, descent = trees.path_sum(d.parent, depth, up), trees.path_sum(d.parent, depth, down)
    p = d.parent[child]
    for realised, floor in ((climb[p], floors.dist_up[p, d.root]), (descent[p], floors.dist_down[d.root, p])):
        assert (realised >= floor * (1 - 1e-12)).all()
        assert np.isclose(realised[realised > 0], floor[realised > 0], rtol=1e-9).any()
