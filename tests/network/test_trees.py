"""Relay-tree arithmetic by depth level, against a plain walk up the parent array on random forests."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from hffm_opt.network import trees


@st.composite
def forests(draw, max_n=14):
    """(parent, member, roots, values, flags): members form rooted trees (each attaches to an earlier node of a
    random order); some nodes are outside every tree (parent -1, member False); a number and 3 flags per node."""
    n = draw(st.integers(1, max_n))
    order = draw(st.permutations(range(n)))
    outside = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    parent = np.full(n, -1)
    member = ~np.array(outside)
    placed = []
    for v in order:
        if not member[v]:
            continue
        if placed and draw(st.integers(0, 3)) > 0:  # mostly attach; sometimes start a new tree
            parent[v] = placed[draw(st.integers(0, len(placed) - 1))]
        placed.append(v)
    roots = np.flatnonzero(member & (parent < 0))
    values = np.array(draw(st.lists(st.floats(0, 100, allow_nan=False), min_size=n, max_size=n)))
    flags = np.array(draw(st.lists(st.lists(st.booleans(), min_size=3, max_size=3), min_size=n, max_size=n)))
    return parent, member, roots, values, flags.reshape(n, 3)


def _walk(parent, v):
    """Nodes from v up to its root, both included (the parent array is acyclic)."""
    path = [v]
    while parent[path[-1]] >= 0:
        path.append(parent[path[-1]])
    return path


def _descendants(parent, v):
    return [w for w in range(len(parent)) if v in _walk(parent, w)]


@settings(max_examples=60, deadline=None)
@given(forests())
def test_depths_count_the_hops_to_the_root(forest):
    parent, member, roots, _, _ = forest
    depth = trees.depths(parent, member, roots)
    for v in range(len(parent)):
        assert depth[v] == (len(_walk(parent, v)) - 1 if member[v] else -1)


@settings(max_examples=60, deadline=None)
@given(forests())
def test_subtree_sum_and_or_aggregate_each_subtree(forest):
    parent, member, roots, own, bits = forest
    own_before, bits_before = own.copy(), bits.copy()
    depth = trees.depths(parent, member, roots)
    total = trees.subtree_sum(parent, depth, own)
    anyof = trees.subtree_or(parent, depth, bits)
    for v in range(len(parent)):
        below = _descendants(parent, v)
        assert abs(total[v] - sum(own[below])) <= 1e-9 * (1 + own.sum())
        assert (anyof[v] == bits[below].any(axis=0)).all()
    assert (own == own_before).all() and (bits == bits_before).all()  # the inputs are not accumulated in place


@settings(max_examples=60, deadline=None)
@given(forests())
def test_path_sum_adds_the_hops_below_the_root(forest):
    parent, member, roots, hop, _ = forest
    got = trees.path_sum(parent, trees.depths(parent, member, roots), hop)
    for v in range(len(parent)):
        want = sum(hop[w] for w in _walk(parent, v)[:-1])  # every node of the path except the root
        assert abs(got[v] - want) <= 1e-9 * (1 + want)


def test_members_that_never_reach_a_root_get_depth_minus_one():
    # 0 is the root; 1 -> 0 is fine; 2 <-> 3 is a cycle; 4 hangs below a non-member (5); 6 has no parent but is
    # not a root
    parent = np.array([-1, 0, 3, 2, 5, 0, -1])
    member = np.array([True, True, True, True, True, False, True])
    depth = trees.depths(parent, member, np.array([0]))
    assert depth.tolist() == [0, 1, -1, -1, -1, -1, -1]


def test_a_single_chain_has_increasing_depths_and_prefix_sums():
    n = 6
    parent = np.arange(-1, n - 1)  # v -> v - 1, root 0
    depth = trees.depths(parent, np.ones(n, bool), np.array([0]))
    assert depth.tolist() == list(range(n))
    hop = np.arange(n, dtype=float) + 1.0
    assert trees.path_sum(parent, depth, hop).tolist() == [float(sum(hop[1:v + 1])) for v in range(n)]
    assert trees.subtree_sum(parent, depth, np.ones(n)).tolist() == [float(n - v) for v in range(n)]
