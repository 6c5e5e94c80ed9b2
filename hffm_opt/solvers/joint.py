"""F4, the joint plan: least energy per edge round under a latency target, cluster by cluster.

Problem (consistent accounting): choose, per cluster, direct uploads or a D2D aggregator and relay tree
(discrete), and CPU speeds, uplink bandwidth and powers, D2D powers (continuous) to minimise the energy per
edge round subject to the latency per edge round being at most ``target_latency_s``. By default the target
is the latency of the paper's own scheme, ``hierarchical-d2d``, on the same instance and seed ("as fast as
HF-FM+D2D, as cheap as possible"); ``target_from="fastest"`` takes the fastest of the heuristic plans
``hierarchical``, ``hierarchical-d2d`` and ``greedy`` instead. The search starts from that fastest plan. Module assignment, tiers, association and ``e_agg`` stay those of the starting plan (everything
each device needs is trained, as in the baselines).

Given the target every cluster only has to finish its period within ``e_agg * target`` and the energy is a
sum over clusters, so the problem decomposes by cluster exactly. Per cluster:

- ``optimise`` (scheduler ``optimal``): candidate structures (direct; the starting plan's; for the
  aggregators of least eccentricity the shortest-path tree and the minimum-energy arborescence), each priced
  by the exact convex inner problem, then, in clusters of at most ``local_search_max_n`` devices, local search
  on the best (re-parent a device, move the aggregator, switch D2D off) until no move improves;
- ``exact`` (scheduler ``optimal-exact``): every rooted spanning arborescence over the usable D2D links and
  direct uploads, each with the convex inner problem: the certified optimum, for clusters small enough.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

import networkx as nx
import numpy as np

from ..evaluate import Metrics, evaluate
from ..formulations.cluster import cluster_data, link_energy, min_link_time
from ..plan import Plan
from ..scenario import Scenario
from ..topology import distances_to
from .cluster_solver import ClusterAllocation, apply_allocation, solve_cluster

EXACT_LIMIT = 20_000  # rooted spanning arborescences (plus direct) the exact mode enumerates at most


class TooLargeForExact(ValueError):
    """The exact mode refuses an instance; the message gives the count of discrete choices."""


@dataclass
class JointResult:
    """The plan, its metrics, energy per edge round (J) = objective, the latency target (s) and bookkeeping."""

    plan: Plan
    metrics: Metrics
    objective: float
    target_latency_s: float
    status: str
    solve_s: float
    evaluated: int
    start: str
    bound: float | None = None
    messages: list[str] = field(default_factory=list)

    @property
    def gap(self) -> float | None:
        if self.bound is None:
            return None
        return abs(self.objective - self.bound) / max(abs(self.objective), 1e-12)


def start_plans(scenario: Scenario, e_agg: int, seed: int) -> dict[str, Plan]:
    """The heuristic plans F4 starts from."""
    from ..schedulers import schedule

    return {name: schedule(scenario, name, e_agg=e_agg, seed=seed) for name in ("hierarchical", "hierarchical-d2d", "greedy")}


def fastest_start(scenario: Scenario, e_agg: int, seed: int = 0) -> tuple[float, str, Plan, dict]:
    """The fastest heuristic plan's latency per edge round (s), its name, the plan, and every start's latency."""
    latencies = {name: (evaluate(scenario, plan).latency_s, plan)
                 for name, plan in start_plans(scenario, e_agg, seed).items()}
    name = min(latencies, key=lambda k: latencies[k][0])
    return latencies[name][0], name, latencies[name][1], {k: v[0] for k, v in latencies.items()}


# ---------------------------------------------------------------------- cluster structures
def _set_structure(plan: Plan, scenario: Scenario, e: int, members: np.ndarray, structure) -> Plan:
    """``plan`` with cluster ``e`` direct (structure None) or rooted at (root, parent over members)."""
    aggregator = plan.aggregator.copy()
    parent = plan.parent.copy()
    down = plan.d2d_down_power_w.copy()
    if structure is None:
        aggregator[e] = -1
        parent[members] = -1
    else:
        root, par = structure
        aggregator[e] = root
        parent[members] = par
        has = par >= 0
        down[members[has]] = scenario.devices.pmax_w[par[has]]
    return plan.replace(aggregator=aggregator, parent=parent, d2d_down_power_w=down)


def usable_links(scenario: Scenario, members: np.ndarray) -> np.ndarray:
    """(n, n) bool: D2D links of a cluster usable in a tree (both directions listed)."""
    n_dev = scenario.n_devices
    local = np.full(n_dev, -1)
    local[members] = np.arange(len(members))
    d2d = scenario.d2d
    keep = (local[d2d.src] >= 0) & (local[d2d.dst] >= 0)
    out = np.zeros((len(members), len(members)), bool)
    out[local[d2d.src[keep]], local[d2d.dst[keep]]] = True
    return out & out.T


def _link_costs(scenario: Scenario, members: np.ndarray, bits: float, t_ref: float) -> tuple[np.ndarray, np.ndarray]:
    """(latency at full power, least energy within ``t_ref``) of each usable link (inf where unusable)."""
    ok = usable_links(scenario, members)
    d2d = scenario.d2d
    n_dev = scenario.n_devices
    local = np.full(n_dev, -1)
    local[members] = np.arange(len(members))
    keep = (local[d2d.src] >= 0) & (local[d2d.dst] >= 0)
    i, j = local[d2d.src[keep]], local[d2d.dst[keep]]
    gain = d2d.gain[keep]
    pmax = scenario.devices.pmax_w[d2d.src[keep]]
    lat = np.full(ok.shape, np.inf)
    lat[i, j] = min_link_time(bits, d2d.bandwidth_hz, gain, pmax, scenario.noise_psd_w_per_hz)
    energy = np.full(ok.shape, np.inf)
    t = np.maximum(t_ref, lat[i, j])
    energy[i, j] = link_energy(t, bits, d2d.bandwidth_hz, gain, scenario.noise_psd_w_per_hz)
    return np.where(ok, lat, np.inf), np.where(ok, energy, np.inf)


def _in_tree(nxt: np.ndarray, members: np.ndarray) -> np.ndarray:
    return np.where(nxt >= 0, members[np.maximum(nxt, 0)], -1)


def candidate_structures(scenario: Scenario, plan: Plan, e: int, t_ref: float, max_roots: int = 4) -> list:
    """Direct, the plan's own structure, and for the ``max_roots`` aggregators of least eccentricity the
    shortest-path tree (latency at full power) and the minimum-energy arborescence (energy within ``t_ref``)."""
    members = np.flatnonzero(plan.association == e)
    out = [None]
    if plan.aggregator[e] >= 0:
        out.append((int(plan.aggregator[e]), plan.parent[members].copy()))
    if len(members) < 2:
        return out
    bits = float((plan.train[members] @ scenario.module_arrays["update_bits"]).max())
    lat, energy = _link_costs(scenario, members, bits, t_ref)
    trees_by_root = [distances_to(lat, r) for r in range(len(members))]
    ecc = np.array([dist.max() for dist, _ in trees_by_root])
    for r in np.argsort(ecc, kind="stable")[:max_roots]:
        if not np.isfinite(ecc[r]):
            break
        out.append((int(members[r]), _in_tree(trees_by_root[r][1], members)))
        arb = _min_arborescence(energy, int(r))
        if arb is not None:
            out.append((int(members[r]), _in_tree(arb, members)))
    return out


def _min_arborescence(cost: np.ndarray, root: int) -> np.ndarray | None:
    """Parent array (local) of the minimum-cost spanning arborescence into ``root`` (Edmonds), None if none."""
    n = len(cost)
    g = nx.DiGraph()
    g.add_nodes_from(range(n))
    i, j = np.nonzero(np.isfinite(cost) & ~np.eye(n, dtype=bool))
    # edges point parent -> child so the arborescence grows out of the root; drop edges into the root
    g.add_weighted_edges_from((int(b), int(a), float(cost[a, b])) for a, b in zip(i, j) if a != root)
    try:
        arb = nx.minimum_spanning_arborescence(g, attr="weight", preserve_attrs=False)
    except nx.NetworkXException:
        return None
    parent = np.full(n, -1)
    for p, c in arb.edges():
        parent[c] = p
    if parent[root] != -1 or (np.delete(parent, root) < 0).any():
        return None
    return parent


def rooted_arborescences(usable: np.ndarray):
    """Every rooted spanning arborescence of the usable-link graph: yields (root, parent) in local indices."""
    n = len(usable)
    for root in range(n):
        others = [v for v in range(n) if v != root]
        choices = [np.flatnonzero(usable[v]) for v in others]
        for pick in itertools.product(*choices):
            parent = np.full(n, -1)
            parent[others] = pick
            if _reaches_root(parent, root):
                yield root, parent


def _reaches_root(parent: np.ndarray, root: int) -> bool:
    n = len(parent)
    for v in range(n):
        seen = 0
        while v != root and seen <= n:
            v = parent[v]
            seen += 1
        if v != root:
            return False
    return True


def count_exact_choices(scenario: Scenario, plan: Plan) -> int:
    """Upper bound on the structures exact enumeration tries: sum over clusters of 1 + n * prod(out-degrees)."""
    total = 0
    for e in range(scenario.n_edges):
        members = np.flatnonzero(plan.association == e)
        usable = usable_links(scenario, members)
        deg = usable.sum(axis=1)
        total += 1 + sum(int(np.prod(np.delete(deg, r).astype(float))) for r in range(len(members)))
    return total


def cluster_periods(scenario: Scenario, plan: Plan) -> np.ndarray:
    """(E,) period latency (s) of each cluster alone under ``plan`` (the evaluator on that cluster's devices)."""
    out = np.zeros(scenario.n_edges)
    for e in range(scenario.n_edges):
        mask = plan.association == e
        if not mask.any():
            continue
        solo = plan.replace(train=plan.train & mask[:, None])
        out[e] = evaluate(scenario, solo).period_latency_s
    return out


# ---------------------------------------------------------------------- the search
def _price(scenario, plan, e, structure, members, budget):
    trial = _set_structure(plan, scenario, e, members, structure)
    return solve_cluster(cluster_data(scenario, trial, e), budget), trial


def _local_search(scenario, plan, e, members, best, budget, counter, max_evals=200):
    """Improve cluster ``e``'s structure by single moves; returns (allocation, plan)."""
    alloc, current = best
    improved = True
    while improved and counter[0] < max_evals:
        improved = False
        for structure in _neighbours(scenario, current, e, members):
            counter[0] += 1
            cand, trial = _price(scenario, current, e, structure, members, budget)
            if cand.feasible and cand.energy_j < alloc.energy_j * (1 - 1e-9):
                alloc, current, improved = cand, trial, True
                break
    return alloc, current


def _neighbours(scenario, plan, e, members):
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
            if _reaches_root(cand, root):
                out.append((int(members[root]), _in_tree(cand, members)))
    for child in np.flatnonzero(parent == root):  # move the aggregator to a child: reverse that edge
        cand = parent.copy()
        cand[root] = child
        cand[child] = -1
        out.append((int(members[child]), _in_tree(cand, members)))
    return out


def optimise(scenario: Scenario, e_agg: int = 2, target_latency_s: float | None = None, seed: int = 0,
             target_from: str = "hierarchical-d2d", exact: bool = False, local_search: bool = True,
             local_search_max_n: int = 12, exact_limit: int = EXACT_LIMIT, progress=None) -> JointResult:
    """Run F4 (or the exact enumeration); see the module docstring."""
    t0 = time.perf_counter()
    fastest, start_name, start, latencies = fastest_start(scenario, e_agg, seed)
    if target_latency_s is not None:
        target = float(target_latency_s)
    elif target_from == "fastest":
        target = fastest
    elif target_from in latencies:
        target = latencies[target_from]
    else:
        raise ValueError(f"target_from = {target_from!r}: must be 'fastest' or one of {sorted(latencies)}")
    budget = e_agg * target
    if exact:
        count = count_exact_choices(scenario, start)
        if count > exact_limit:
            raise TooLargeForExact(f"exact mode = {count} discrete choices (direct or a rooted spanning tree per "
                                   f"cluster): above the limit of {exact_limit}; use 'optimal'")
    plan = start
    start_latency = cluster_periods(scenario, start)
    allocations: dict[int, tuple[np.ndarray, ClusterAllocation]] = {}
    messages, counter = [], [0]
    for e in (progress(range(scenario.n_edges)) if progress else range(scenario.n_edges)):
        members = np.flatnonzero(plan.association == e)
        if exact:
            usable = usable_links(scenario, members)
            structures = [None] + [(int(members[r]), _in_tree(p, members)) for r, p in rooted_arborescences(usable)]
        else:
            t_ref = budget / max(2 * e_agg, 1)
            structures = candidate_structures(scenario, plan, e, t_ref)
        best = None
        for structure in structures:
            counter[0] += 1
            alloc, trial = _price(scenario, plan, e, structure, members, budget)
            if alloc.feasible and (best is None or alloc.energy_j < best[0].energy_j):
                best = (alloc, trial)
        if best is None:  # keep the starting plan's decisions (they meet the default target at full power)
            if start_latency[e] > budget * (1 + 1e-9):
                messages.append(f"cluster of edge {scenario.edges.ids[e]}: no structure meets {target:.6g} s per round")
            continue
        if local_search and not exact and len(members) <= local_search_max_n:
            best = _local_search(scenario, plan, e, members, best, budget, counter)
        alloc, plan = best
        allocations[e] = (members, alloc)
    status = "infeasible" if messages else ("optimal" if exact else "feasible")
    final = apply_allocation(plan, allocations).replace(scheduler="optimal-exact" if exact else "optimal",
                                                         meta={"target_latency_s": target, "start": start_name})
    metrics = evaluate(scenario, final)
    energy = metrics.energy_j
    return JointResult(final, metrics, energy, target, status, time.perf_counter() - t0, counter[0], start_name,
                       bound=energy if exact and not messages else None, messages=messages)


def improve(scenario: Scenario, plan: Plan, target_latency_s: float | None = None, max_evals: int = 200) -> JointResult:
    """Local search from any plan: price each cluster's structure with the convex inner problem, then apply
    single moves while they lower the energy. The target defaults to the plan's own latency per edge round."""
    t0 = time.perf_counter()
    target = evaluate(scenario, plan).latency_s if target_latency_s is None else float(target_latency_s)
    budget = plan.e_agg * target
    allocations, messages, counter = {}, [], [0]
    for e in range(scenario.n_edges):
        members = np.flatnonzero(plan.association == e)
        structure = None if plan.aggregator[e] < 0 else (int(plan.aggregator[e]), plan.parent[members].copy())
        alloc, trial = _price(scenario, plan, e, structure, members, budget)
        counter[0] += 1
        if not alloc.feasible:
            messages.append(alloc.message)
            continue
        alloc, plan = _local_search(scenario, plan, e, members, (alloc, trial), budget, counter, max_evals)
        allocations[e] = (members, alloc)
    final = apply_allocation(plan, allocations).replace(scheduler="local-search", meta={"target_latency_s": target})
    metrics = evaluate(scenario, final)
    return JointResult(final, metrics, metrics.energy_j, target, "infeasible" if messages else "feasible",
                       time.perf_counter() - t0, counter[0], plan.scheduler, messages=messages)
