"""D2D graphs of a cluster: the paper prototype's latency graph and shortest-path relay trees.

Latencies in seconds; node indices are positions in the ``members`` array of one cluster.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components, csgraph_from_dense, dijkstra, minimum_spanning_tree

from ..errors import ScenarioError
from .channel import shannon_rate
from .scenario import Scenario


def member_index(n_devices: int, members: np.ndarray) -> np.ndarray:
    """(U,) the local index of each device among ``members`` (its position in that array), -1 for the others."""
    local = np.full(n_devices, -1)
    local[members] = np.arange(len(members))
    return local


def cluster_links(scenario: Scenario, members: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The listed D2D links with both ends among ``members``: (their indices in ``scenario.d2d``'s links,
    ascending; local index of each such link's sender; local index of its receiver). The cost grows with the
    members' links, not with every link of the scenario."""
    local = member_index(scenario.n_devices, members)
    d2d = scenario.d2d
    out = d2d.leaving(members)
    keep = out[local[d2d.dst[out]] >= 0]
    return keep, local[d2d.src[keep]], local[d2d.dst[keep]]


def link_matrix(scenario: Scenario, members: np.ndarray, values: np.ndarray, fill=np.nan) -> np.ndarray:
    """(n, n) matrix of a per-D2D-link quantity among ``members`` (``fill`` where no link is listed)."""
    keep, i, j = cluster_links(scenario, members)
    out = np.full((len(members), len(members)), fill, dtype=float)
    out[i, j] = np.asarray(values, dtype=float)[keep]
    return out


def usable_links(scenario: Scenario, members: np.ndarray) -> np.ndarray:
    """(n, n) bool: D2D links among ``members`` usable in a relay tree (both directions listed: the tree's
    broadcast uses the reverse link)."""
    _, i, j = cluster_links(scenario, members)
    out = np.zeros((len(members), len(members)), bool)
    out[i, j] = True
    return out & out.T


def d2d_components(scenario: Scenario) -> np.ndarray:
    """(U,) the connected component of each device in the graph of D2D links listed in both directions (the links a
    relay tree may use): a tree's members all lie in one component."""
    d2d, n = scenario.d2d, scenario.n_devices
    graph = coo_matrix((np.ones(len(d2d.src)), (d2d.src, d2d.dst)), shape=(n, n)).tocsr()
    return connected_components(graph.minimum(graph.T), directed=False)[1]


def prototype_latency_graph(scenario: Scenario, members: np.ndarray, bits: float) -> np.ndarray:
    """The prototype's D2D latency graph of one cluster (section 7 of the design), inf where there is no arc.

    Arcs: listed links no longer than the prototype's connect radius, weight ``bits / r_d2d`` at the
    prototype's D2D rate power and bandwidth. If that graph is not strongly connected, both directions of
    every edge of the minimum spanning tree of all listed links (weighted by ``min(lat_uv, lat_vu)``) are added.
    """
    proto = scenario.prototype
    keep, i, j = cluster_links(scenario, members)
    rate = shannon_rate(proto.d2d_bandwidth_hz, proto.d2d_rate_power_w, scenario.d2d.gain[keep],
                        scenario.noise_psd_w_per_hz)
    per_bit = np.full((len(members), len(members)), np.inf)  # s per bit: the arcs, also when bits = 0
    per_bit[i, j] = 1.0 / rate
    pos = scenario.devices.position_m[members]
    dist = np.sqrt(((pos[:, None] - pos[None]) ** 2).sum(-1))
    graph = np.where(dist <= proto.d2d_connect_radius_m, per_bit, np.inf)
    n = len(members)
    if n > 1 and not _strongly_connected(graph):
        sym = np.minimum(per_bit, per_bit.T)
        mst = minimum_spanning_tree(csgraph_from_dense(sym, null_value=np.inf)).tocoo()
        if mst.nnz < n - 1:
            raise ScenarioError(f"d2d.links of cluster with devices {scenario.devices.ids[members].tolist()} = "
                                f"{mst.nnz} spanning edges: the listed D2D links do not connect the cluster")
        for i, j in zip(mst.row, mst.col):
            graph[i, j] = per_bit[i, j]
            graph[j, i] = per_bit[j, i]
    arcs = np.isfinite(graph)
    graph[arcs] *= bits
    return graph


def _strongly_connected(graph: np.ndarray) -> bool:
    dist = dijkstra(csgraph_from_dense(graph, null_value=np.inf), indices=0)
    back = dijkstra(csgraph_from_dense(graph.T, null_value=np.inf), indices=0)
    return bool(np.isfinite(dist).all() and np.isfinite(back).all())


def distances_to(graph: np.ndarray, root) -> tuple[np.ndarray, np.ndarray]:
    """Shortest-path latency of every node to ``root`` and each node's next hop on that path (-1 at the root);
    for an array of roots, one row per root (one call: the graph is converted once)."""
    dist, pred = dijkstra(csgraph_from_dense(graph.T, null_value=np.inf), indices=root, return_predecessors=True)
    return dist, np.where(pred < 0, -1, pred)


def distances_from(graph: np.ndarray, root: int) -> tuple[np.ndarray, np.ndarray]:
    """Shortest-path latency from ``root`` to every node and each node's predecessor on that path (-1 at the root)."""
    dist, pred = dijkstra(csgraph_from_dense(graph, null_value=np.inf), indices=root, return_predecessors=True)
    return dist, np.where(pred < 0, -1, pred)
