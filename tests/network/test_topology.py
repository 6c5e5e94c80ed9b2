"""D2D graphs of a cluster: member indexing, per-link matrices, usable links, the prototype's latency graph and
shortest paths, each against a reference written out by hand (dicts of listed links, networkx)."""

import networkx as nx
import numpy as np
import pytest
from conftest import N0, tiny_scenario
from hypothesis import given, settings
from hypothesis import strategies as st

from hffm_opt.errors import ScenarioError
from hffm_opt.network import generators, topology
from hffm_opt.network.scenario import D2DLinks

SEEDS = st.integers(0, 2**32 - 1)


def _random_cluster(seed, n, drop=0.25, box_m=80.0):
    """One cluster of ``n`` devices at random positions in a ``box_m`` square; each ordered link is listed with
    probability 1 - ``drop``, with a random gain."""
    rng = np.random.default_rng(seed)
    s = tiny_scenario((n,), positions=rng.uniform(0, box_m, (n, 2)))
    keep = rng.random(len(s.d2d.src)) >= drop
    gain = 10.0 ** rng.uniform(-11, -8, keep.sum())
    return s.replace(d2d=D2DLinks(src=s.d2d.src[keep], dst=s.d2d.dst[keep], gain=gain, bandwidth_hz=8e6))


def _listed(s):
    """{(src, dst): link index} of the scenario's listed D2D links."""
    return {(int(a), int(b)): k for k, (a, b) in enumerate(zip(s.d2d.src, s.d2d.dst))}


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 20), data=st.data())
def test_member_index_inverts_the_members_array(n, data):
    members = np.array(data.draw(st.lists(st.integers(0, n - 1), unique=True, max_size=n)), dtype=int)
    local = topology.member_index(n, members)
    assert local.shape == (n,)
    for u in range(n):
        where = np.flatnonzero(members == u)
        assert local[u] == (where[0] if where.size else -1)


@settings(max_examples=25, deadline=None)
@given(seed=SEEDS, n=st.integers(2, 7), data=st.data())
def test_link_matrices_match_the_listed_links(seed, n, data):
    s = _random_cluster(seed, n)
    listed = _listed(s)
    members = np.array(data.draw(st.permutations(range(n)))[:data.draw(st.integers(1, n))])
    keep, i, j = topology.cluster_links(s, members)
    inside = set(members.tolist())
    assert keep.tolist() == [k for k, (a, b) in enumerate(zip(s.d2d.src, s.d2d.dst))
                             if int(a) in inside and int(b) in inside]
    assert (members[i] == s.d2d.src[keep]).all() and (members[j] == s.d2d.dst[keep]).all()
    values = np.arange(len(s.d2d.src)) + 0.5  # one distinct number per listed link
    mat = topology.link_matrix(s, members, values, fill=-1.0)
    usable = topology.usable_links(s, members)
    for a, u in enumerate(members):
        for b, v in enumerate(members):
            k = listed.get((int(u), int(v)))
            assert mat[a, b] == (values[k] if k is not None else -1.0)
            assert usable[a, b] == ((int(u), int(v)) in listed and (int(v), int(u)) in listed)
    assert np.isnan(topology.link_matrix(s, members, values)).sum() == len(members) ** 2 - keep.size


def _graph(seed, n, density=0.5):
    rng = np.random.default_rng(seed)
    w = np.where(rng.random((n, n)) < density, rng.uniform(0.1, 10.0, (n, n)), np.inf)
    np.fill_diagonal(w, np.inf)
    return w


def _nx(graph):
    return nx.from_numpy_array(np.where(np.isfinite(graph), graph, 0.0), create_using=nx.DiGraph)  # inf: no arc


@settings(max_examples=40, deadline=None)
@given(seed=SEEDS, n=st.integers(1, 9), density=st.sampled_from([0.2, 0.5, 1.0]), data=st.data())
def test_shortest_paths_to_and_from_a_root_match_networkx(seed, n, density, data):
    graph = _graph(seed, n, density)
    root = data.draw(st.integers(0, n - 1))
    g = _nx(graph)
    into = nx.single_source_dijkstra_path_length(g.reverse(), root)
    out = nx.single_source_dijkstra_path_length(g, root)
    dist_to, nxt = topology.distances_to(graph, root)
    dist_from, pred = topology.distances_from(graph, root)
    for v in range(n):
        assert dist_to[v] == pytest.approx(into.get(v, np.inf), rel=1e-12)
        assert dist_from[v] == pytest.approx(out.get(v, np.inf), rel=1e-12)
        if v == root or v not in into:
            assert nxt[v] == -1
        else:  # the next hop is an arc that lies on a shortest path
            assert dist_to[v] == pytest.approx(graph[v, nxt[v]] + dist_to[nxt[v]], rel=1e-12)
        if v == root or v not in out:
            assert pred[v] == -1
        else:
            assert dist_from[v] == pytest.approx(dist_from[pred[v]] + graph[pred[v], v], rel=1e-12)


def _latency_by_hand(s, bits):
    """{(u, v): S / (B log2(1 + g P / (N0 B)))} at the prototype's D2D rate power and bandwidth, every listed link."""
    pr = s.prototype
    b, p = pr.d2d_bandwidth_hz, pr.d2d_rate_power_w
    return {(int(u), int(v)): bits / (b * np.log2(1 + g * p / (s.noise_psd_w_per_hz * b)))
            for u, v, g in zip(s.d2d.src, s.d2d.dst, s.d2d.gain)}


@settings(max_examples=30, deadline=None)
@given(seed=SEEDS, n=st.integers(2, 7))
def test_prototype_graph_keeps_links_in_radius_and_completes_with_the_mst(seed, n):
    s = _random_cluster(seed, n, drop=0.0, box_m=70.0)  # all links listed: the cluster is always connectable
    members = np.arange(n)
    lat = _latency_by_hand(s, 48e6)
    pos = s.devices.position_m
    near = {k for k in lat if np.linalg.norm(pos[k[0]] - pos[k[1]]) <= s.prototype.d2d_connect_radius_m}
    in_radius = nx.empty_graph(n, nx.DiGraph)
    in_radius.add_edges_from(near)
    if nx.is_strongly_connected(in_radius):
        arcs = near
    else:
        und = nx.Graph()
        und.add_weighted_edges_from((u, v, min(lat[(u, v)], lat[(v, u)])) for u, v in lat if u < v)
        mst = nx.minimum_spanning_tree(und)
        arcs = near | {(u, v) for a, b in mst.edges for u, v in ((a, b), (b, a))}
    graph = topology.prototype_latency_graph(s, members, 48e6)
    for u in range(n):
        for v in range(n):
            assert graph[u, v] == (pytest.approx(lat[(u, v)], rel=1e-12) if (u, v) in arcs else np.inf)
    assert nx.is_strongly_connected(_nx(graph))


def test_prototype_graph_scales_with_the_bits_and_ignores_other_clusters():
    # a chain: 0 - 1 and 1 - 2 are 20 m apart (in the 30 m radius), 0 - 2 is 40 m apart
    s = tiny_scenario((3, 2), positions=[[0, 0], [20, 0], [40, 0], [500, 0], [510, 0]], d2d_gain=2e-9)
    first = topology.prototype_latency_graph(s, np.array([0, 1, 2]), 1e6)
    double = topology.prototype_latency_graph(s, np.array([0, 1, 2]), 2e6)
    finite = np.isfinite(first)
    assert (finite == np.isfinite(double)).all() and np.allclose(double[finite], 2 * first[finite])
    rate = 8e6 * np.log2(1 + 2e-9 * 0.2 / (N0 * 8e6))
    assert first[0, 1] == pytest.approx(1e6 / rate)
    assert np.isinf(first[0, 2]) and np.isinf(first[2, 0]) and np.isinf(np.diag(first)).all()
    other = topology.prototype_latency_graph(s, np.array([3, 4]), 1e6)
    assert other.shape == (2, 2) and np.isfinite(other[0, 1]) and np.isfinite(other[1, 0])
    far = tiny_scenario((3,), positions=[[0, 0], [100, 0], [200, 0]], d2d_gain=2e-9)  # no arc in the radius: the MST
    for scenario, members in ((s, [0, 1, 2]), (far, [0, 1, 2])):
        some = topology.prototype_latency_graph(scenario, np.array(members), 1e6)
        nothing = topology.prototype_latency_graph(scenario, np.array(members), 0.0)  # nobody trains: the same arcs
        assert (np.isfinite(nothing) == np.isfinite(some)).all() and (nothing[np.isfinite(some)] == 0).all()


def test_a_cluster_its_listed_links_cannot_connect_is_refused():
    s = tiny_scenario((3,), positions=[[0, 0], [10, 0], [20, 0]])
    only_01 = D2DLinks(src=[0, 1], dst=[1, 0], gain=[1e-9, 1e-9], bandwidth_hz=8e6)
    with pytest.raises(ScenarioError, match="do not connect"):
        topology.prototype_latency_graph(s.replace(d2d=only_01), np.arange(3), 48e6)


def test_a_single_device_has_no_arc():
    s = tiny_scenario((1,))
    assert np.isinf(topology.prototype_latency_graph(s, np.array([0]), 48e6)).all()
    assert not topology.usable_links(s, np.array([0])).any()


def test_d2d_components_are_the_clusters_the_links_join():
    """The generator lists D2D links only inside a cluster (every pair within range by default): one component
    per cluster; with a short range some clusters split, and never does a component span two clusters."""
    sc = generators.clustered(3, 6, seed=4)
    comp = topology.d2d_components(sc)
    for e in range(3):
        assert len(np.unique(comp[sc.devices.edge == e])) == 1
    assert len(np.unique(comp)) == 3
    short = generators.clustered(3, 6, seed=4, d2d_range_m=60.0)
    comp = topology.d2d_components(short)
    for c in np.unique(comp):
        assert len(np.unique(short.devices.edge[comp == c])) == 1
    assert len(np.unique(comp)) > 3
