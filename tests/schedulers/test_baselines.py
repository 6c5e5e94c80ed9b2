"""The paper's baseline schedulers and their D2D building blocks: valid plans with the prototype's fixed decisions,
recorded (else seeded random) aggregators, and relay trees whose routes are shortest paths of the prototype's D2D
graph (checked with networkx)."""

import dataclasses

import networkx as nx
import numpy as np
import pytest
from conftest import small_clustered, tiny_scenario
from hypothesis import given, settings
from hypothesis import strategies as st

from hffm_opt import evaluate, schedule
from hffm_opt.network.topology import prototype_latency_graph
from hffm_opt.plan import CLOUD, EDGE
from hffm_opt.schedulers.baselines import (
    EDGE_ONLY_ROUNDS,
    recorded_or_random_aggregators,
    shortest_path_trees,
    with_d2d,
)

BASELINES = ("star", "hierarchical", "edge-only", "hierarchical-d2d", "edge-only-d2d")
D2D_OF = {"hierarchical-d2d": "hierarchical", "edge-only-d2d": "edge-only"}


def _check_fixed_decisions(s, plan):
    """The prototype's decisions: all needed trainable modules, equal band split, capped rate power, full CPU."""
    dev, mods = s.devices, s.module_arrays
    assert np.array_equal(plan.train, s.need & mods["trainable"])
    assert np.array_equal(plan.association, dev.edge)
    per_edge = np.bincount(dev.edge, weights=plan.bandwidth_hz, minlength=s.n_edges)
    assert per_edge == pytest.approx(s.edges.bandwidth_hz, rel=1e-12)
    for e in range(s.n_edges):
        assert np.ptp(plan.bandwidth_hz[dev.edge == e]) == 0  # equal shares
    assert np.array_equal(plan.power_w, np.minimum(s.prototype.uplink_rate_power_w, dev.pmax_w))
    assert np.array_equal(plan.cpu_hz, dev.cpu_hz)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), e_agg=st.sampled_from([1, 2, 8]), per=st.integers(1, 5))
def test_every_baseline_is_valid_and_keeps_the_prototypes_fixed_decisions(seed, e_agg, per):
    s = small_clustered(seed, n_e=3, per=per)
    for name in BASELINES:
        plan = schedule(s, name, e_agg=e_agg, seed=seed)
        m = evaluate(s, plan)  # raises PlanError on any violation
        assert np.isfinite(m.latency_s) and m.latency_s > 0 and m.energy_j > 0
        _check_fixed_decisions(s, plan)
        assert plan.scheduler == name
    assert schedule(s, "star", e_agg=e_agg).e_agg == 1 and schedule(s, "star").mode == "star"
    assert schedule(s, "hierarchical", e_agg=e_agg).e_agg == e_agg
    assert schedule(s, "edge-only").e_agg == EDGE_ONLY_ROUNDS == schedule(s, "edge-only-d2d").e_agg


def _with_cluster_local_expert(s):
    """``s`` with its first expert marked cluster-local (personalised: never aggregated above the edge)."""
    expert = next(k for k, m in enumerate(s.modules) if m.kind == "expert")
    modules = list(s.modules)
    modules[expert] = dataclasses.replace(modules[expert], cluster_local=True)
    return s.replace(modules=tuple(modules)), expert


@pytest.mark.parametrize("name", [n for n in BASELINES if n != "star"])
def test_tiers_go_to_the_top_tier_and_cluster_local_modules_stop_at_the_edge(name):
    s, expert = _with_cluster_local_expert(small_clustered(1))
    plan = schedule(s, name)
    evaluate(s, plan)  # raises PlanError on any violation
    top = EDGE if name.startswith("edge-only") else CLOUD
    assert (np.delete(plan.tier, expert, axis=1) == top).all()
    assert (plan.tier[:, expert] == EDGE).all()  # personalised: never sent to the cloud


def test_star_is_valid_on_a_scenario_with_a_cluster_local_module():
    s, _ = _with_cluster_local_expert(small_clustered(1))
    evaluate(s, schedule(s, "star"))


def test_powers_are_capped_at_each_devices_pmax():
    pmax = np.array([0.05, 0.1, 0.5, 2.0])
    s = tiny_scenario((4,), pmax_w=pmax)
    plan = schedule(s, "hierarchical-d2d", seed=0)
    evaluate(s, plan)
    pr = s.prototype
    assert np.array_equal(plan.power_w, np.minimum(pr.uplink_rate_power_w, pmax))
    child = plan.parent >= 0
    assert child.any()
    assert np.array_equal(plan.d2d_down_power_w[child], np.minimum(pr.d2d_rate_power_w, pmax[plan.parent[child]]))


def test_recorded_aggregators_win_over_the_seed(paper):
    recorded = paper.recorded_aggregators
    assert (recorded >= 0).all()
    for seed in range(5):
        assert np.array_equal(recorded_or_random_aggregators(paper, seed), recorded)
        assert np.array_equal(schedule(paper, "hierarchical-d2d", seed=seed).aggregator, recorded)


def test_unrecorded_aggregators_are_seeded_uniform_draws_from_each_cluster():
    s = small_clustered(2, n_e=3, per=4)
    partial = np.array([-1, int(s.cluster(1)[2]), -1])  # cluster 1 has a recorded aggregator, the others do not
    s = s.replace(recorded_aggregators=partial)
    draws = np.array([recorded_or_random_aggregators(s, seed) for seed in range(200)])
    assert (draws[:, 1] == partial[1]).all()
    for e in (0, 2):
        assert set(draws[:, e].tolist()) == set(s.cluster(e).tolist())  # each member is drawn at some seed
        counts = np.bincount(draws[:, e] - s.cluster(e)[0], minlength=4)
        assert counts.min() >= 25  # 50 expected per member; far from a biased draw
    assert np.array_equal(recorded_or_random_aggregators(s, 7), recorded_or_random_aggregators(s, 7))


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), per=st.integers(1, 6), agg_seed=st.integers(0, 100))
def test_relay_routes_are_shortest_paths_of_the_prototype_graph(seed, per, agg_seed):
    s = small_clustered(seed, n_e=2, per=per)
    plan = schedule(s, "hierarchical", seed=seed)
    aggregators = recorded_or_random_aggregators(s, agg_seed)
    parent = shortest_path_trees(s, plan, aggregators)
    bits = max(float((plan.train @ s.module_arrays["update_bits"]).max()), 1.0)
    for e in range(s.n_edges):
        members = s.cluster(e)
        graph = prototype_latency_graph(s, members, bits)
        local = {int(u): i for i, u in enumerate(members)}
        root = local[int(aggregators[e])]
        arcs = nx.from_numpy_array(np.where(np.isfinite(graph), graph, 0.0), create_using=nx.DiGraph)
        into = nx.single_source_dijkstra_path_length(arcs.reverse(), root)
        assert parent[aggregators[e]] == -1
        for u in members:
            route, v, hops = 0.0, int(u), 0
            while parent[v] >= 0:
                assert parent[v] in local  # relays stay inside the cluster
                route += graph[local[v], local[int(parent[v])]]
                v, hops = int(parent[v]), hops + 1
                assert hops <= len(members)
            assert v == aggregators[e]
            assert route == pytest.approx(into[local[int(u)]], rel=1e-9)


def test_clusters_without_an_aggregator_or_with_one_device_get_no_tree():
    s = tiny_scenario((1, 3), positions=[[0, 0], [0, 500], [10, 500], [20, 500]])
    plan = schedule(s, "hierarchical")
    assert (shortest_path_trees(s, plan, np.array([0, -1])) == -1).all()
    parent = shortest_path_trees(s, plan, np.array([-1, 2]))
    assert parent[0] == -1 and parent[2] == -1 and set(parent[[1, 3]].tolist()) <= {1, 2, 3}
    d2d = with_d2d(s, plan, np.array([0, 2]))
    evaluate(s, d2d)
    assert d2d.aggregator.tolist() == [0, 2] and d2d.parent[0] == -1


@pytest.mark.parametrize("name", list(D2D_OF))
def test_d2d_variants_change_only_the_relay_structure(paper, name):
    base, d2d = schedule(paper, D2D_OF[name]), schedule(paper, name)
    for f in ("mode", "e_agg"):
        assert getattr(base, f) == getattr(d2d, f)
    for f in ("association", "train", "tier", "bandwidth_hz", "power_w", "d2d_power_w", "cpu_hz"):
        assert np.array_equal(getattr(base, f), getattr(d2d, f)), f
    assert d2d.uses_d2d.all() and not base.uses_d2d.any()
    lean, rich = evaluate(paper, base), evaluate(paper, d2d)
    assert rich.latency_s < lean.latency_s and rich.energy_j < lean.energy_j  # the paper's headline on its scenario
