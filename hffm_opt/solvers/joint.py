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

``optimise`` reports a proven lower bound (:func:`hffm_opt.solvers.bounds.lower_bound`, a relaxation valid over
every structure) and hence a proven gap; clusters are shared among ``workers`` forked processes.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..evaluate import Metrics, evaluate
from ..formulations.cluster import cluster_data, link_energy, min_link_time
from ..formulations.relay_tree import build_relay_tree
from ..plan import Plan
from ..scenario import Scenario
from ..topology import distances_to
from .arborescence import min_arborescence
from .bounds import lower_bound
from .cluster_solver import ClusterAllocation, apply_allocation, solve_cluster
from .milp import solve_milp

EXACT_LIMIT = 20_000  # rooted spanning arborescences (plus direct) the exact mode enumerates at most
WORKERS = min(2, os.cpu_count() or 1)  # processes optimise uses by default (the target machine has 2 cores)
F2_MAX_N = 12  # clusters up to this size also get the F2 relay-tree MILP's tree as a candidate (milp_solver given)


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
    trees_by_root = [distances_to(lat, r) for r in range(len(members))]
    ecc = np.array([dist.max() for dist, _ in trees_by_root])
    for r in np.argsort(ecc, kind="stable")[:max_roots]:
        if not np.isfinite(ecc[r]):
            break
        out.append((int(members[r]), _in_tree(trees_by_root[r][1], members)))
        arb = min_arborescence(energy, int(r))
        if arb is not None:
            out.append((int(members[r]), _in_tree(arb, members)))
    if milp is not None and len(members) <= F2_MAX_N:
        found = f2_tree(scenario, plan, e, lat, energy, t_ref, **milp)
        if found is not None:
            out.append(found)
    return out


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
    return int(members[res.decision["root"]]), _in_tree(res.decision["parent"], members)


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


def best_structure(scenario: Scenario, start: Plan, budget: float, exact: bool, local_search: bool,
                   local_search_max_n: int, milp: dict | None, e: int):
    """Cluster ``e``'s least-energy structure within the period budget: (structure, allocation, structures priced);
    (None, None, count) when no structure meets the budget. Structures are None (direct) or (root, parent)."""
    members = np.flatnonzero(start.association == e)
    if exact:
        usable = usable_links(scenario, members)
        structures = [None] + [(int(members[r]), _in_tree(p, members)) for r, p in rooted_arborescences(usable)]
    else:
        structures = candidate_structures(scenario, start, e, budget / max(2 * start.e_agg, 1), milp=milp)
    best, counter = None, [0]
    for structure in structures:
        counter[0] += 1
        alloc, trial = _price(scenario, start, e, structure, members, budget)
        if alloc.feasible and (best is None or alloc.energy_j < best[0].energy_j):
            best = (alloc, trial)
    if best is None:
        return None, None, counter[0]
    if local_search and len(members) <= local_search_max_n:
        best = _local_search(scenario, start, e, members, best, budget, counter)
    alloc, trial = best
    structure = None if trial.aggregator[e] < 0 else (int(trial.aggregator[e]), trial.parent[members].copy())
    return structure, alloc, counter[0]


_JOB: tuple | None = None  # the shared arguments of best_structure in forked workers


def _cluster_job(e: int):
    return best_structure(*_JOB, e)


def _pool(workers: int, job: tuple):
    """A pool of forked processes that see ``job`` (no pickling of the scenario)."""
    global _JOB
    _JOB = job
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork"))


def optimise(scenario: Scenario, e_agg: int = 2, target_latency_s: float | None = None, seed: int = 0,
             target_from: str = "hierarchical-d2d", exact: bool = False, local_search: bool = True,
             local_search_max_n: int = 12, exact_limit: int = EXACT_LIMIT, progress=None,
             milp_solver: str | None = None, milp_time_limit: float = 60.0, milp_gap: float = 1e-2,
             workers: int = WORKERS) -> JointResult:
    """Run F4 (or the exact enumeration); see the module docstring. ``milp_solver`` (``"highs"``/``"gurobi"``)
    adds the F2 MILP's tree, solved within ``milp_time_limit`` s and ``milp_gap``, to small clusters' candidates;
    ``workers`` processes share the clusters (forked, when there are at least two clusters per worker)."""
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
    milp = None if milp_solver is None else {"solver": milp_solver, "time_limit": milp_time_limit, "mip_gap": milp_gap}
    job = (scenario, start, budget, exact, local_search and not exact, local_search_max_n, milp)
    edges = range(scenario.n_edges)
    if workers > 1 and scenario.n_edges >= 2 * workers:
        with _pool(workers, job) as pool:
            found = list(progress(pool.map(_cluster_job, edges)) if progress else pool.map(_cluster_job, edges))
    else:
        found = [best_structure(*job, e) for e in (progress(edges) if progress else edges)]
    plan, start_latency = start, cluster_periods(scenario, start)
    allocations: dict[int, tuple[np.ndarray, ClusterAllocation]] = {}
    messages, evaluated = [], 0
    for e, (structure, alloc, count) in zip(edges, found):
        evaluated += count
        members = np.flatnonzero(plan.association == e)
        if alloc is None:  # keep the starting plan's decisions (they meet the default target at full power)
            if start_latency[e] > budget * (1 + 1e-9):
                messages.append(f"cluster of edge {scenario.edges.ids[e]}: no structure meets {target:.6g} s per round")
            continue
        plan = _set_structure(plan, scenario, e, members, structure)
        allocations[e] = (members, alloc)
    status = "infeasible" if messages else ("optimal" if exact else "feasible")
    final = apply_allocation(plan, allocations).replace(scheduler="optimal-exact" if exact else "optimal",
                                                         meta={"target_latency_s": target, "start": start_name})
    metrics = evaluate(scenario, final)
    energy = metrics.energy_j
    bound = None
    if not messages:
        bound = energy if exact else lower_bound(scenario, start, budget)
    return JointResult(final, metrics, energy, target, status, time.perf_counter() - t0, evaluated, start_name,
                       bound=bound, messages=messages)


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
