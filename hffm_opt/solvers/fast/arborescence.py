"""Minimum-cost spanning arborescence into a root (Chu-Liu/Edmonds) on a dense cost matrix, in numpy.

``cost[v, w]`` is the cost of ``v`` choosing ``w`` as its parent (inf = not allowed). Each level picks every
node's cheapest parent; a cycle is contracted into one node (arcs leaving the cycle from ``x`` cost
``cost[x, y] - cost[x, parent(x)]``) and the smaller problem is solved the same way, then expanded. O(n^3)
array work at worst; a 100-node dense cluster takes milliseconds.
"""

from __future__ import annotations

import numpy as np


def _cycle(parent: np.ndarray, root: int) -> np.ndarray | None:
    """Nodes of one cycle of the parent pointers (the root has parent -1), or None if they form a tree."""
    n = len(parent)
    state = np.zeros(n, np.int8)  # 0 unseen, 1 on the current walk, 2 done
    for start in range(n):
        walk, v = [], start
        while v != -1 and state[v] == 0:
            state[v] = 1
            walk.append(v)
            v = parent[v]
        if v != -1 and state[v] == 1:
            return np.array(walk[walk.index(v):])
        state[walk] = 2
    return None


def min_arborescence(cost: np.ndarray, root: int) -> np.ndarray | None:
    """Parent array (``-1`` at ``root``) of the spanning arborescence into ``root`` of least total ``cost[v, parent[v]]``;
    None when no spanning arborescence exists."""
    c = np.array(cost, dtype=float)
    n = len(c)
    np.fill_diagonal(c, np.inf)
    c[root, :] = np.inf
    parent = np.argmin(c, axis=1)
    best = c[np.arange(n), parent]
    parent[root] = -1
    if not np.isfinite(np.delete(best, root)).all():
        return None
    cyc = _cycle(parent, root)
    if cyc is None:
        return parent
    in_cycle = np.zeros(n, bool)
    in_cycle[cyc] = True
    outside = np.flatnonzero(~in_cycle)
    m = len(outside)
    small = np.full((m + 1, m + 1), np.inf)
    small[:m, :m] = c[np.ix_(outside, outside)]
    into = c[np.ix_(outside, cyc)]  # outside node -> a cycle node as parent
    small[:m, m] = into.min(axis=1)
    leave = c[np.ix_(cyc, outside)] - best[cyc][:, None]  # a cycle node switches to an outside parent
    small[m, :m] = leave.min(axis=0)
    sub = min_arborescence(small, int(np.searchsorted(outside, root)))
    if sub is None:
        return None
    result = parent.copy()
    to_cycle = sub[:m] == m
    result[outside] = np.where(to_cycle, cyc[np.argmin(into, axis=1)], outside[np.clip(sub[:m], 0, m - 1)])
    result[root] = -1
    y = sub[m]
    result[cyc[int(np.argmin(leave[:, y]))]] = outside[y]
    return result
