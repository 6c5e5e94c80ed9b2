"""The discrete part of F4 in one cluster: its structures (direct uploads, or an aggregator and a relay tree over
usable D2D links), the candidates the search prices, every rooted spanning arborescence for the exact mode, and
the single moves of local search, and the error of an exact mode with too many choices. A structure is None (direct)
or (root device, parent array over the members).
"""

from __future__ import annotations

import itertools

import numpy as np

from ...errors import InstanceTooLarge
from ...formulations.cluster import cluster_data
from ...formulations.relay_tree import build_relay_tree
from ...network.channel import link_energy, transmit_time
from ...network.scenario import Scenario
from ...network.topology import cluster_links, distances_to, usable_links
from ...plan import AGG, EDGE, Plan
from ..fast.arborescence import min_arborescence
from ..milp import solve_milp

F2_MAX_N = 12  # clusters up to this size also get the F2 relay-tree MILP's tree as a candidate (milp_solver given)


def exact_too_large(count: float, what: str, limit: float) -> InstanceTooLarge:
    """The error of an exact mode that would enumerate ``count`` ``what`` (e.g. "discrete choices"), above ``limit``;
    a count of more than 15 digits is shown to 3 significant digits."""
    shown = f"{count:.0f}" if count < 1e15 else f"{count:.3g}"
    return InstanceTooLarge(f"exact mode = {shown} {what}: above the limit of {limit:.0f}; use 'optimal'")


def set_structure(plan: Plan, scenario: Scenario, e: int, members: np.ndarray, structure) -> Plan:
    """``plan`` with cluster ``e`` direct (structure None; its aggregator-tier modules then go to the edge tier) or
    rooted at (root, parent over members)."""
    aggregator = plan.aggregator.copy()
    parent = plan.parent.copy()
    down = plan.d2d_down_power_w.copy()
    tier = plan.tier.copy()
    if structure is None:
        aggregator[e] = -1
        parent[members] = -1
        tier[e, tier[e] == AGG] = EDGE
    else:
        root, par = structure
        aggregator[e] = root
        parent[members] = par
        has = par >= 0
        down[members[has]] = scenario.devices.pmax_w[par[has]]
    return plan.replace(aggregator=aggregator, parent=parent, d2d_down_power_w=down, tier=tier)


def _link_costs(scenario: Scenario, members: np.ndarray, bits: float, t_ref: float) -> tuple[np.ndarray, np.ndarray]:
    """(latency at full power, least energy within ``t_ref``) of each usable link (inf where unusable)."""
    ok = usable_links(scenario, members)
    d2d = scenario.d2d
    keep, i, j = cluster_links(scenario, members)
    gain = d2d.gain[keep]
    pmax = scenario.devices.pmax_w[d2d.src[keep]]
    lat = np.full(ok.shape, np.inf)
    lat[i, j] = transmit_time(bits, d2d.bandwidth_hz, pmax, gain, scenario.noise_psd_w_per_hz)
    energy = np.full(ok.shape, np.inf)
    t = np.maximum(t_ref, lat[i, j])
    energy[i, j] = link_energy(bits, t, d2d.bandwidth_hz, gain, scenario.noise_psd_w_per_hz)
    return np.where(ok, lat, np.inf), np.where(ok, energy, np.inf)


def in_tree(nxt: np.ndarray, members: np.ndarray) -> np.ndarray:
    return np.where(nxt >= 0, members[np.maximum(nxt, 0)], -1)


def candidate_structures(scenario: Scenario, plan: Plan, e: int, t_ref: float, max_roots: int = 4,
                         milp: dict | None = None) -> list:
    """Direct, the plan's own structure, and for the ``max_roots`` aggregators of least eccentricity the
    shortest-path tree (latency at full power) and the minimum-energy arborescence (energy within ``t_ref``);
    with ``milp`` (``{"solver", "time_limit", "mip_gap"}``) and at most :data:`F2_MAX_N` members, also the F2
    relay-tree MILP's tree (:func:`f2_tree`)."""
    members = np.flatnonzero(plan.association == e)
    out = [None]
    if plan.aggregator[e] >= 0:
        out.append((int(plan.aggregator[e]), plan.parent[members].copy()))
    if len(members) < 2:
        return out
    bits = float((plan.train[members] @ scenario.module_arrays["update_bits"]).max())
    lat, energy = _link_costs(scenario, members, bits, t_ref)
    dist, nxt = distances_to(lat, np.arange(len(members)))  # row r: every node to root r
    ecc = dist.max(axis=1)
    for r in np.argsort(ecc, kind="stable")[:max_roots]:
        if not np.isfinite(ecc[r]):
            break
        out.append((int(members[r]), in_tree(nxt[r], members)))
        arb = min_arborescence(energy, int(r))
        if arb is not None:
            out.append((int(members[r]), in_tree(arb, members)))
    if milp is not None and len(members) <= F2_MAX_N:
        found = f2_tree(scenario, plan, e, lat, energy, t_ref, **milp)
        if found is not None:
            out.append(found)
    return out


def cluster_structures(scenario: Scenario, plan: Plan, e: int, enumerate_all: bool, t_ref: float,
                       milp: dict | None = None, max_roots: int = 4) -> list:
    """Cluster ``e``'s structures to price: every one (direct and every rooted spanning arborescence) when
    ``enumerate_all``, else :func:`candidate_structures` (``t_ref``, ``milp``, ``max_roots`` as there)."""
    members = np.flatnonzero(plan.association == e)
    if not enumerate_all:
        return candidate_structures(scenario, plan, e, t_ref, max_roots, milp)
    usable = usable_links(scenario, members)
    return [None] + [(int(members[r]), in_tree(p, members)) for r, p in rooted_arborescences(usable)]


def f2_tree(scenario: Scenario, plan: Plan, e: int, lat: np.ndarray, energy: np.ndarray, t_ref: float, solver: str,
            time_limit: float, mip_gap: float):
    """The F2 MILP's aggregator and tree for cluster ``e`` on ``solver`` (``highs``/``gurobi``), or None.

    Arc data: latency at full power ``lat`` (s) and least energy within ``t_ref`` ``energy`` (J) of each usable
    link, both directions; compute time at full CPU speed; weights w_T = 1/s and w_E = t_ref / (sum of every node's
    cheapest arc energy), so the energy term is of the order of one reference time.
    """
    members = np.flatnonzero(plan.association == e)
    data = cluster_data(scenario, plan, e)
    compute = np.where(data.cycles > 0, data.cycles / data.fmax, 0.0)
    cheapest = np.where(np.isfinite(energy), energy, np.inf).min(axis=1)
    scale = float(cheapest[np.isfinite(cheapest)].sum()) if np.isfinite(cheapest).any() else 0.0
    model = build_relay_tree(lat, energy, lat, energy, compute, w_T=1.0, w_E=t_ref / scale if scale > 0 else 0.0,
                             allowed=np.isfinite(lat), node_ids=scenario.devices.ids[members])
    res = solve_milp(model, solver, time_limit=time_limit, mip_gap=mip_gap)
    if not res.ok:
        return None
    return int(members[res.decision["root"]]), in_tree(res.decision["parent"], members)


def rooted_arborescences(usable: np.ndarray):
    """Every rooted spanning arborescence of the usable-link graph: yields (root, parent) in local indices."""
    n = len(usable)
    for root in range(n):
        others = [v for v in range(n) if v != root]
        choices = [np.flatnonzero(usable[v]) for v in others]
        for pick in itertools.product(*choices):
            parent = np.full(n, -1)
            parent[others] = pick
            if reaches_root(parent, root):
                yield root, parent


def reaches_root(parent: np.ndarray, root: int) -> bool:
    n = len(parent)
    for v in range(n):
        seen = 0
        while v != root and seen <= n:
            v = parent[v]
            seen += 1
        if v != root:
            return False
    return True


def cluster_exact_choices(scenario: Scenario, members: np.ndarray) -> float:
    """Upper bound on the structures exact enumeration tries in one cluster: 1 + sum over roots of the product of
    the other members' usable out-degrees (a float: inf where it overflows)."""
    deg = usable_links(scenario, members).sum(axis=1).astype(float)
    with np.errstate(over="ignore"):
        return 1.0 + sum(float(np.prod(np.delete(deg, r))) for r in range(len(members)))


def count_exact_choices(scenario: Scenario, plan: Plan) -> float:
    """Upper bound on the structures exact enumeration tries, summed over clusters."""
    return sum(cluster_exact_choices(scenario, np.flatnonzero(plan.association == e)) for e in range(scenario.n_edges))


def neighbours(scenario, plan, e, members):
    """Structures one move away: direct; each device re-parented; the aggregator moved along a tree edge."""
    if plan.aggregator[e] < 0:
        return []
    local = {int(m): i for i, m in enumerate(members)}
    usable = usable_links(scenario, members)
    root = local[int(plan.aggregator[e])]
    parent = np.array([local[int(p)] if p >= 0 else -1 for p in plan.parent[members]])
    out = [None]
    for v in range(len(members)):
        if v == root:
            continue
        for w in np.flatnonzero(usable[v]):
            if w == parent[v]:
                continue
            cand = parent.copy()
            cand[v] = w
            if reaches_root(cand, root):
                out.append((int(members[root]), in_tree(cand, members)))
    for child in np.flatnonzero(parent == root):  # move the aggregator to a child: reverse that edge
        cand = parent.copy()
        cand[root] = child
        cand[child] = -1
        out.append((int(members[child]), in_tree(cand, members)))
    return out
