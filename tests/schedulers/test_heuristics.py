"""The greedy and random heuristics and their building blocks: every plan passes ``evaluate``, greedy keeps D2D only
where its least-eccentricity tree shortens the cluster's full-power period, deadline filling meets its budget with
no more than full power, and random is a function of its seed."""

from itertools import pairwise

import networkx as nx
import numpy as np
import pytest
from conftest import N0, small_clustered, tiny_scenario
from hypothesis import given, settings
from hypothesis import strategies as st

from hffm_opt import evaluate, schedule
from hffm_opt.formulations.cluster import cluster_data
from hffm_opt.network import generators
from hffm_opt.network.scenario import D2DLinks
from hffm_opt.schedulers.heuristics import (
    d2d_latency_graph,
    fill_deadline,
    full_power_times,
)
from hffm_opt.solvers.f4.decomposition import cluster_periods

SEEDS = st.integers(0, 10_000)
PLAN_FIELDS = ("association", "train", "tier", "aggregator", "parent", "bandwidth_hz", "power_w", "d2d_power_w",
               "d2d_down_power_w", "cpu_hz")


def _time(s, bits, band, power, gain):
    """Seconds to send ``bits``: bits / (B log2(1 + g P / (N0 B))), written out here."""
    return bits / (band * np.log2(1.0 + gain * power / (s.noise_psd_w_per_hz * band)))


def _full_power(s, plan):
    """``plan``'s structure with every device at full CPU speed and full power; equal band split in direct
    clusters, the whole band to the aggregator of a D2D cluster."""
    dev, a = s.devices, plan.association
    d2d = plan.uses_d2d[a]
    direct_count = np.bincount(a, weights=~d2d, minlength=s.n_edges)
    band = np.where(d2d, 0.0, s.edges.bandwidth_hz[a] / np.maximum(direct_count[a], 1))
    roots = plan.aggregator[plan.aggregator >= 0]
    band[roots] = s.edges.bandwidth_hz[a[roots]]
    power = np.where(band > 0, dev.pmax_w, 0.0)
    down = np.where(plan.parent >= 0, dev.pmax_w[np.maximum(plan.parent, 0)], dev.pmax_w)
    return plan.replace(cpu_hz=dev.cpu_hz, bandwidth_hz=band, power_w=power, d2d_power_w=dev.pmax_w,
                        d2d_down_power_w=down, deadline_s=None)


def _least_eccentricity_tree(s, plan, e):
    """(root device, parent over the scenario's devices, eccentricity) of cluster ``e`` by networkx: the largest
    shortest-path latency into the root at full power on links listed both ways, plus the root's own upload
    with the whole band, minimised over the root."""
    members = np.flatnonzero(plan.association == e)
    bits = float((plan.train[members] @ s.module_arrays["update_bits"]).max())
    links = {(int(u), int(v)): g for u, v, g in zip(s.d2d.src, s.d2d.dst, s.d2d.gain)}
    g = nx.DiGraph()
    g.add_nodes_from(members.tolist())
    for (u, v), gain in links.items():
        if u in g and v in g and (v, u) in links:
            g.add_edge(u, v, weight=_time(s, bits, s.d2d.bandwidth_hz, s.devices.pmax_w[u], gain))
    best = None
    for r in members:
        into = nx.single_source_dijkstra(g.reverse(), int(r))
        if len(into[0]) < len(members):
            continue
        own = _time(s, bits, s.edges.bandwidth_hz[e], s.devices.pmax_w[r], s.devices.uplink_gain[r, e])
        ecc = max(into[0].values()) + own
        if best is None or ecc < best[2]:
            parent = np.full(s.n_devices, -1)
            for v, path in into[1].items():
                if v != r:
                    parent[v] = path[-2]  # paths of the reversed graph run root -> v: v's next hop is the one before
            best = (int(r), parent, ecc)
    return best


def _with_tree(plan, e, root, parent):
    members = plan.association == e
    aggregator = plan.aggregator.copy()
    aggregator[e] = root
    return plan.replace(aggregator=aggregator, parent=np.where(members, parent, plan.parent))


def _path_latency(s, plan, bits, v):
    """Latency of v's relay path to its aggregator at full power, hop by hop."""
    total = 0.0
    while plan.parent[v] >= 0:
        p = plan.parent[v]
        total += _time(s, bits, s.d2d.bandwidth_hz, s.devices.pmax_w[v], s.d2d.gain[s.link_lookup([v], [p])[0]])
        v = p
    return total


def _check_greedy_choice(s, e_agg):
    """Greedy's plan is valid; where it uses D2D, the aggregator is the one of least eccentricity, its routes are
    shortest paths and the tree beats direct uploads at full power; where not, that tree does not beat them.
    Returns the plan."""
    plan = schedule(s, "greedy", e_agg=e_agg)
    evaluate(s, plan)  # raises PlanError on any violation
    direct = schedule(s, "hierarchical", e_agg=e_agg)
    direct_period = cluster_periods(s, _full_power(s, direct))
    for e in range(s.n_edges):
        root, parent, _ = _least_eccentricity_tree(s, direct, e)
        tree = _with_tree(direct, e, root, parent)
        tree_period = cluster_periods(s, _full_power(s, tree))[e]
        if plan.aggregator[e] >= 0:
            assert plan.aggregator[e] == root
            assert tree_period < direct_period[e]
            members = np.flatnonzero(plan.association == e)
            bits = float((plan.train[members] @ s.module_arrays["update_bits"]).max())
            for v in members:  # a shortest-path tree: each relay path is as fast as the best route
                assert _path_latency(s, plan, bits, v) == pytest.approx(_path_latency(s, tree, bits, v), rel=1e-9)
        else:
            assert (plan.parent[plan.association == e] == -1).all()
            assert tree_period >= direct_period[e]
    return plan


@settings(max_examples=8, deadline=None)
@given(seed=SEEDS, e_agg=st.sampled_from([1, 2, 5]), spread=st.sampled_from([100.0, 250.0, 600.0]))
def test_greedy_keeps_d2d_exactly_where_its_tree_shortens_the_full_power_period(seed, e_agg, spread):
    _check_greedy_choice(generators.clustered(3, 4, seed=seed, spacing_m=2000.0, cluster_radius_m=spread), e_agg)


@pytest.mark.parametrize("e_agg", [1, 3])
def test_greedy_stays_direct_where_d2d_links_are_poor_and_uses_them_where_they_are_good(e_agg):
    # two clusters of 3: excellent D2D gains in cluster 0, hopeless ones in cluster 1
    s = tiny_scenario((3, 3), positions=[[0, 0], [10, 0], [20, 0], [0, 900], [10, 900], [20, 900]])
    gain = np.where(s.devices.edge[s.d2d.src] == 0, 1e-7, 1e-16)
    s = s.replace(d2d=D2DLinks(src=s.d2d.src, dst=s.d2d.dst, gain=gain, bandwidth_hz=8e6))
    plan = _check_greedy_choice(s, e_agg)
    assert plan.aggregator[0] >= 0 and plan.aggregator[1] == -1


@pytest.mark.parametrize("name", ["greedy", "random", "hierarchical", "hierarchical-d2d"])
@pytest.mark.parametrize("factor", [None, 1.0, 1.7, 5.0])
def test_fill_deadline_meets_its_budget_with_no_more_than_full_power(name, factor):
    s = small_clustered(11, n_e=3, per=4)
    plan = schedule(s, name, e_agg=3, seed=2)
    full = _full_power(s, plan)
    slowest = float(cluster_periods(s, full).max())
    budget = None if factor is None else factor * slowest
    filled = fill_deadline(s, plan, budget)
    m = evaluate(s, filled)  # raises PlanError on any violation
    dev = s.devices
    assert m.period_latency_s <= (slowest if budget is None else budget) * (1 + 1e-9)
    assert np.array_equal(filled.cpu_hz, dev.cpu_hz)
    assert (filled.power_w <= dev.pmax_w * (1 + 1e-12)).all()
    child = filled.parent >= 0
    assert (filled.d2d_power_w[child] <= dev.pmax_w[child] * (1 + 1e-12)).all()
    assert (filled.d2d_down_power_w[child] <= dev.pmax_w[filled.parent[child]] * (1 + 1e-12)).all()
    for f in ("association", "train", "tier", "aggregator", "parent"):  # only the continuous part changes
        assert np.array_equal(getattr(filled, f), getattr(plan, f))
    assert m.energy_j <= evaluate(s, full).energy_j * (1 + 1e-9)  # stretching never costs energy


@pytest.mark.parametrize("name", ["hierarchical", "greedy"])
def test_fill_deadline_uses_the_whole_budget_and_energy_falls_as_it_grows(name):
    s = small_clustered(4, n_e=3, per=4)
    plan = schedule(s, name, e_agg=2)
    slowest = float(cluster_periods(s, _full_power(s, plan)).max())
    energies = []
    for factor in (1.0, 1.2, 2.0, 4.0):
        filled = fill_deadline(s, plan, factor * slowest)
        m = evaluate(s, filled)
        assert m.period_latency_s <= factor * slowest * (1 + 1e-9)
        energies.append(m.energy_j)
        # every cluster ends its period exactly at the budget: any earlier end would leave power to save
        assert cluster_periods(s, filled) == pytest.approx(np.full(s.n_edges, factor * slowest), rel=1e-6)
    assert all(b < a for a, b in pairwise(energies))


@settings(max_examples=6, deadline=None)
@given(seed=SEEDS, e_agg=st.sampled_from([1, 3]))
def test_full_power_times_period_is_the_evaluators_at_full_power(seed, e_agg):
    s = small_clustered(seed, n_e=3, per=3)
    for name in ("hierarchical", "hierarchical-d2d", "random"):
        plan = schedule(s, name, e_agg=e_agg, seed=seed)
        periods = cluster_periods(s, _full_power(s, plan))
        for e in range(s.n_edges):
            t = full_power_times(cluster_data(s, plan, e))
            assert t["period"] == pytest.approx(periods[e], rel=1e-9)
            assert (t["tau"] >= 0).all()


def test_d2d_latency_graph_prices_links_listed_both_ways_at_the_senders_full_power():
    s = tiny_scenario((3,), pmax_w=np.array([1.0, 0.5, 0.25]))
    gains = {(0, 1): 1e-9, (1, 0): 2e-9, (1, 2): 3e-9, (2, 1): 4e-9, (0, 2): 5e-9}  # 2 -> 0 is not listed
    src, dst = zip(*gains)
    s = s.replace(d2d=D2DLinks(src=src, dst=dst, gain=list(gains.values()), bandwidth_hz=8e6))
    graph = d2d_latency_graph(s, np.arange(3), 1e6)
    for u in range(3):
        for v in range(3):
            if (u, v) in gains and (v, u) in gains:
                rate = 8e6 * np.log2(1 + gains[(u, v)] * s.devices.pmax_w[u] / (N0 * 8e6))
                assert graph[u, v] == pytest.approx(1e6 / rate, rel=1e-12)
            else:
                assert graph[u, v] == np.inf


@settings(max_examples=8, deadline=None)
@given(seed=SEEDS, e_agg=st.sampled_from([1, 2, 4]))
def test_random_plans_are_valid_seeded_and_within_the_limits(seed, e_agg):
    s = small_clustered(seed % 50, n_e=3, per=4)
    a, b = schedule(s, "random", e_agg=e_agg, seed=seed), schedule(s, "random", e_agg=e_agg, seed=seed)
    other = schedule(s, "random", e_agg=e_agg, seed=seed + 1)
    evaluate(s, a)
    evaluate(s, other)
    assert all(np.array_equal(getattr(a, f), getattr(b, f)) for f in PLAN_FIELDS)
    assert not all(np.array_equal(getattr(a, f), getattr(other, f)) for f in PLAN_FIELDS)
    dev = s.devices
    assert (a.cpu_hz <= dev.cpu_hz).all() and (a.cpu_hz >= 0.5 * dev.cpu_hz).all()
    assert (a.power_w <= dev.pmax_w).all() and (a.d2d_power_w <= dev.pmax_w).all()


@pytest.mark.parametrize("name", ["greedy", "random"])
def test_heuristics_pass_evaluate_on_the_paper_scenario(paper, name):
    for seed in (0, 1):
        m = evaluate(paper, schedule(paper, name, e_agg=4, seed=seed))
        assert np.isfinite(m.latency_s) and m.latency_s > 0 and np.isfinite(m.energy_j) and m.energy_j > 0
