"""Relay-tree arithmetic on a parent array, vectorised by depth level.

A forest is given by ``parent`` (U,): the next hop of each node toward its root, -1 for roots and for nodes
outside any tree (``member`` False). Loops run over depth levels, never over nodes.
"""

from __future__ import annotations

import numpy as np


def depths(parent: np.ndarray, member: np.ndarray, roots: np.ndarray) -> np.ndarray:
    """Depth of every member node (roots 0); -1 for non-members and for members that never reach a root."""
    parent = np.asarray(parent)
    depth = np.full(len(parent), -1, dtype=np.int64)
    depth[roots] = 0
    pending = np.flatnonzero(member & (depth < 0))
    level = 0
    while pending.size:
        par = parent[pending]
        ready = (par >= 0) & (depth[np.maximum(par, 0)] == level)
        if not ready.any():
            break
        depth[pending[ready]] = level + 1
        pending = pending[~ready]
        level += 1
    return depth


def subtree_or(parent: np.ndarray, depth: np.ndarray, own: np.ndarray) -> np.ndarray:
    """(U, K) bool: for each node, the OR of ``own`` rows over its subtree (itself included)."""
    acc = np.array(own, dtype=bool, copy=True)
    for level in range(int(depth.max(initial=0)), 0, -1):
        nodes = np.flatnonzero(depth == level)
        np.logical_or.at(acc, parent[nodes], acc[nodes])
    return acc


def subtree_sum(parent: np.ndarray, depth: np.ndarray, own: np.ndarray) -> np.ndarray:
    """(U,) sum of ``own`` over each node's subtree (itself included)."""
    acc = np.array(own, dtype=float, copy=True)
    for level in range(int(depth.max(initial=0)), 0, -1):
        nodes = np.flatnonzero(depth == level)
        np.add.at(acc, parent[nodes], acc[nodes])
    return acc


def path_sum(parent: np.ndarray, depth: np.ndarray, hop: np.ndarray) -> np.ndarray:
    """(U,) sum of ``hop[v]`` over the nodes v on the path from each node up to (not including) its root."""
    out = np.zeros(len(parent), dtype=float)
    for level in range(1, int(depth.max(initial=0)) + 1):
        nodes = np.flatnonzero(depth == level)
        out[nodes] = hop[nodes] + out[parent[nodes]]
    return out
