"""F4's discrete structures: every rooted spanning arborescence (counted by Kirchhoff's matrix-tree theorem), the
bound on exact enumeration, the candidates the search prices, local-search moves and writing a structure into a
plan."""

import itertools

import networkx as nx
import numpy as np
import pytest
from conftest import small_clustered
from hypothesis import given, settings
from hypothesis import strategies as st

from hffm_opt import evaluate, schedule
from hffm_opt.network import generators
from hffm_opt.network.channel import link_energy
from hffm_opt.network.topology import usable_links
from hffm_opt.schedulers.heuristics import d2d_latency_graph, fill_deadline
from hffm_opt.solvers.f4.structures import (
    candidate_structures,
    count_exact_choices,
    neighbours,
    reaches_root,
    rooted_arborescences,
    set_structure,
)


def _kirchhoff(usable, root):
    """Number of spanning arborescences into ``root`` (v -> parent arcs): the (root, root) minor of the out-degree
    Laplacian (Tutte's matrix-tree theorem)."""
    a = np.array(usable, float)
    np.fill_diagonal(a, 0.0)
    lap = np.diag(a.sum(axis=1)) - a
    keep = [v for v in range(len(a)) if v != root]
    return round(np.linalg.det(lap[np.ix_(keep, keep)])) if keep else 1


def _is_tree_into(parent, root, usable):
    """Every non-root node has a usable parent and every node reaches ``root`` (walked by hand)."""
    n = len(parent)
    if parent[root] != -1:
        return False
    for v in range(n):
        if v != root and not usable[v, parent[v]]:
            return False
        seen, w = set(), v
        while w != root:
            if w in seen or w < 0:
                return False
            seen.add(w)
            w = parent[w]
    return True


@st.composite
def digraphs(draw, max_n=5):
    n = draw(st.integers(1, max_n))
    bits = draw(st.lists(st.booleans(), min_size=n * n, max_size=n * n))
    usable = np.array(bits, bool).reshape(n, n)
    np.fill_diagonal(usable, False)
    if draw(st.booleans()):
        usable = usable & usable.T  # the symmetric graphs F4 works on
    return usable


@settings(max_examples=60, deadline=None)
@given(digraphs())
def test_arborescences_are_valid_distinct_and_as_many_as_kirchhoff_counts(usable):
    n = len(usable)
    found = list(rooted_arborescences(usable))
    keys = {(r, tuple(p.tolist())) for r, p in found}
    assert len(keys) == len(found)  # no structure twice
    for r, p in found:
        assert _is_tree_into(p, r, usable)
    for r in range(n):
        assert sum(1 for root, _ in found if root == r) == _kirchhoff(usable, r)


def test_complete_graph_has_cayleys_count():
    n = 5
    usable = ~np.eye(n, dtype=bool)
    assert sum(1 for _ in rooted_arborescences(usable)) == n * n ** (n - 2)


def test_reaches_root_rejects_cycles_and_detached_nodes():
    assert reaches_root(np.array([-1, 0, 1, 2]), 0)
    assert not reaches_root(np.array([-1, 2, 1]), 0)  # 1 <-> 2 loop forever
    assert not reaches_root(np.array([-1, 0, -1]), 0)  # 2 hangs nowhere
    assert not reaches_root(np.array([1, -1]), 0)  # the root's own parent pointer leads away


def _partial(seed, n_e=2, per=4):
    """Clusters whose D2D links are limited by range: graphs that are sometimes sparse, sometimes complete."""
    return generators.clustered(n_e, per, seed=seed, spacing_m=800.0, cluster_radius_m=250.0, d2d_range_m=300.0)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), per=st.integers(1, 4))
def test_count_exact_choices_is_the_formula_and_bounds_the_enumeration(seed, per):
    s = _partial(seed, per=per)
    plan = schedule(s, "hierarchical")
    formula, actual = 0, 0
    listed = set(zip(s.d2d.src.tolist(), s.d2d.dst.tolist()))
    for e in range(s.n_edges):
        members = s.cluster(e).tolist()
        deg = {v: sum((v, w) in listed and (w, v) in listed for w in members) for v in members}
        formula += 1 + sum(int(np.prod([deg[v] for v in members if v != r])) for r in members)
        actual += 1 + sum(1 for _ in rooted_arborescences(usable_links(s, s.cluster(e))))
    assert count_exact_choices(s, plan) == formula
    assert count_exact_choices(s, plan) >= actual


def _members(plan, e):
    return np.flatnonzero(plan.association == e)


def _local_tree(structure, members):
    """(local root, local parent array) of a structure given in device indices."""
    local = {int(u): i for i, u in enumerate(members)}
    root, parent = structure
    return local[int(root)], np.array([local[int(p)] if p >= 0 else -1 for p in parent])


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10_000), max_roots=st.integers(1, 4))
def test_candidates_are_valid_trees_rooted_at_least_eccentricity_with_the_cheapest_arborescence(seed, max_roots):
    s = _partial(seed, per=4)
    plan = schedule(s, "greedy", e_agg=2)
    t_ref = evaluate(s, plan).latency_s / 2
    for e in range(s.n_edges):
        members = _members(plan, e)
        usable = usable_links(s, members)
        found = candidate_structures(s, plan, e, t_ref, max_roots=max_roots)
        assert found[0] is None
        if plan.aggregator[e] >= 0:  # the plan's own structure is among them
            assert any(c is not None and c[0] == plan.aggregator[e] and np.array_equal(c[1], plan.parent[members])
                       for c in found)
        bits = float((plan.train[members] @ s.module_arrays["update_bits"]).max())
        lat = d2d_latency_graph(s, members, bits)
        arcs = nx.from_numpy_array(np.where(np.isfinite(lat), lat, 0.0), create_using=nx.DiGraph)
        ecc = nx.floyd_warshall_numpy(arcs).max(axis=0)  # the longest shortest path into each root
        # least energy of each usable link within t_ref (never faster than full power), written out per pair
        cost = np.full(usable.shape, np.inf)
        for (v, w), k in _link_index(s).items():
            a, b = np.flatnonzero(members == v), np.flatnonzero(members == w)
            if a.size and b.size and usable[a[0], b[0]]:
                t = max(t_ref, lat[a[0], b[0]])
                cost[a[0], b[0]] = link_energy(bits, t, s.d2d.bandwidth_hz, s.d2d.gain[k], s.noise_psd_w_per_hz)
        mine = [_local_tree(c, members) for c in found[1 + (plan.aggregator[e] >= 0):]]
        for root, parent in mine:
            assert _is_tree_into(parent, root, usable)
            assert np.isfinite(ecc[root]) and (ecc[root] <= np.sort(ecc)[max_roots - 1] * (1 + 1e-12))
        roots = {r for r, _ in mine}
        assert len(roots) <= max_roots
        for r in roots:  # one candidate per root is the minimum-energy arborescence (brute force over all)
            best = min(_tree_cost(cost, p, r) for root, p in rooted_arborescences(usable) if root == r)
            assert min(_tree_cost(cost, p, r) for root, p in mine if root == r) == pytest.approx(best, rel=1e-9)
        for structure in found:  # each is a valid plan once its continuous part is filled in
            evaluate(s, fill_deadline(s, set_structure(plan, s, e, members, structure)))


def _tree_cost(cost, parent, root):
    return sum(cost[v, parent[v]] for v in range(len(parent)) if v != root)


def _link_index(s):
    return {(int(v), int(w)): k for k, (v, w) in enumerate(zip(s.d2d.src, s.d2d.dst))}


def test_neighbours_are_the_single_moves():
    s = small_clustered(3, n_e=2, per=4)
    plan = schedule(s, "greedy", e_agg=2)
    e = int(np.flatnonzero(plan.aggregator >= 0)[0])
    members = _members(plan, e)
    usable = usable_links(s, members)
    root, parent = _local_tree((plan.aggregator[e], plan.parent[members]), members)
    moves = neighbours(s, plan, e, members)
    assert moves[0] is None
    reparent = []
    for v, w in itertools.product(range(len(members)), repeat=2):
        if v != root and usable[v, w] and w != parent[v]:
            cand = parent.copy()
            cand[v] = w
            if _is_tree_into(cand, root, usable):
                reparent.append(tuple(cand.tolist()))
    found = [_local_tree(m, members) for m in moves[1:]]
    same_root = sorted(tuple(p.tolist()) for r, p in found if r == root)
    assert same_root == sorted(reparent)
    tree_edges = {frozenset((v, int(parent[v]))) for v in range(len(members)) if v != root}
    moved = [(r, p) for r, p in found if r != root]
    assert len(moved) == int((parent == root).sum())  # the aggregator moves to each of its children
    for r, p in moved:
        assert parent[r] == root and _is_tree_into(p, r, usable)
        assert {frozenset((v, int(p[v]))) for v in range(len(members)) if v != r} == tree_edges  # same tree
    direct = set_structure(plan, s, e, members, None)
    assert neighbours(s, direct, e, members) == []


def test_set_structure_writes_one_cluster_and_round_trips():
    s = small_clustered(8, n_e=2, per=3)
    plan = schedule(s, "hierarchical-d2d", seed=1)
    members = _members(plan, 0)
    others = ~np.isin(np.arange(s.n_devices), members)
    for root, parent in rooted_arborescences(usable_links(s, members)):  # 3 roots x 3 trees of the triangle
        structure = (int(members[root]), np.where(parent >= 0, members[np.maximum(parent, 0)], -1))
        new = set_structure(plan, s, 0, members, structure)
        evaluate(s, new)
        assert new.aggregator[0] == members[root] and new.aggregator[1] == plan.aggregator[1]
        assert np.array_equal(new.parent[members], structure[1])
        assert np.array_equal(new.parent[others], plan.parent[others])
        child = members[parent >= 0]
        assert np.array_equal(new.d2d_down_power_w[child], s.devices.pmax_w[new.parent[child]])
        back = set_structure(new, s, 0, members, None)
        assert back.aggregator[0] == -1 and (back.parent[members] == -1).all()
        assert np.array_equal(back.parent[others], plan.parent[others])
        evaluate(s, back)
