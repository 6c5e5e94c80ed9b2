"""F4, the joint plan: least energy per edge round under a latency target, cluster by cluster.

Problem (consistent accounting): choose, per cluster, direct uploads or a D2D aggregator and relay tree
(discrete), and CPU speeds, uplink bandwidth and powers, D2D powers (continuous) to minimise the energy per
edge round subject to the latency per edge round being at most ``target_latency_s``. The model
(:class:`~hffm_opt.formulations.joint.JointModel`) holds the target and the starting plan; module assignment,
tiers, association and ``e_agg`` stay those of the starting plan.

Given the target every cluster only has to finish its period within ``e_agg * target`` and the energy is a
sum over clusters, so the problem decomposes by cluster exactly. Per cluster:

- ``optimise`` (scheduler ``optimal``): candidate structures (direct; the starting plan's; for the
  aggregators of least eccentricity the shortest-path tree and the minimum-energy arborescence), each priced
  by the exact convex inner problem, then, in clusters of at most ``local_search_max_n`` devices, local search
  on the best (re-parent a device, move the aggregator, switch D2D off) until no move improves; in larger
  clusters (their candidates from ``DESCENT_ROOTS`` aggregators) the re-parenting descent of :mod:`.descent`,
  which values every move at once and prices a batch of them with one inner problem;
- ``exact`` (scheduler ``optimal-exact``): every rooted spanning arborescence over the usable D2D links and
  direct uploads, each with the convex inner problem: the certified optimum, for clusters small enough.

``optimise`` enumerates every cluster small enough (at most ``EXACT_CLUSTER_LIMIT`` structures) exactly and bounds
the others by a relaxation valid over every structure (:func:`hffm_opt.solvers.f4.bounds.cluster_lower_bound`), hence a
proven gap; clusters are shared among ``workers`` forked processes.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import time

import numpy as np

from ..._pools import ignore_sigint, start_pool
from ..._version import __version__
from ...evaluate import evaluate
from ...formulations.cluster import cluster_data
from ...formulations.joint import JointModel
from ...network.scenario import Scenario
from ...plan import Plan
from ..milp import forget_highs_threads
from ..result import Result, Status
from .bounds import cluster_lower_bound, fixed_energy
from .cluster import ClusterAllocation, apply_allocation, kept_allocation, solve_cluster
from .descent import descend, descent_applies
from .free_floor import free_latency_floor
from .objectives import minimise_latency, minimise_weighted
from .screening import structure_bound
from .structures import (
    cluster_exact_choices,
    cluster_structures,
    count_exact_choices,
    exact_too_large,
    neighbours,
    set_structure,
)

EXACT_LIMIT = 20_000  # rooted spanning arborescences (plus direct) the exact mode enumerates at most
EXACT_CLUSTER_LIMIT = 200  # a cluster with at most this many structures is enumerated (certified) by optimal too
WORKERS = min(2, os.cpu_count() or 1)  # processes optimise uses by default (the target machine has 2 cores)
DESCENT_ROOTS = 2  # aggregators whose candidate trees are priced before the re-parenting descent (large clusters)
BUDGET_RTOL = 1e-9  # relative: a cluster's period (energy) above the budget (the start's) by more is refused


def cluster_costs(scenario: Scenario, plan: Plan) -> tuple[np.ndarray, np.ndarray]:
    """(E,) period latency (s) and (E,) period energy (J) of each cluster alone under ``plan`` (the evaluator's
    per-cluster figures)."""
    m = evaluate(scenario, plan)
    return m.cluster_period_s, m.cluster_energy_j


def cluster_periods(scenario: Scenario, plan: Plan) -> np.ndarray:
    """(E,) period latency (s) of each cluster alone under ``plan`` (the evaluator on that cluster's devices)."""
    return cluster_costs(scenario, plan)[0]


def _structure(plan: Plan, e: int, members: np.ndarray):
    """Cluster ``e``'s structure in ``plan``: None (direct) or (root, parent over the members)."""
    return None if plan.aggregator[e] < 0 else (int(plan.aggregator[e]), plan.parent[members].copy())


def _guard(scenario: Scenario, start: Plan, plan: Plan, allocations: dict, budget: float,
           start_costs: tuple[np.ndarray, np.ndarray]) -> tuple[Plan, np.ndarray, list[str]]:
    """Write ``allocations`` into ``plan`` and price every cluster again with the evaluator: a cluster that misses
    the period ``budget`` or costs more than under ``start`` goes back to the start's structure and decisions
    where the start meets the budget (``allocations`` is updated in place). Returns the plan, the (E,) mask of
    the clusters sent back and, for a cluster that misses the budget with no start to fall back to, a message."""
    final = apply_allocation(plan, allocations)
    periods, energies = cluster_costs(scenario, final)
    start_period, start_energy = start_costs
    meets = start_period <= budget * (1 + BUDGET_RTOL)
    late = periods > budget * (1 + BUDGET_RTOL)
    back = meets & (late | (energies > start_energy * (1 + BUDGET_RTOL)))
    for e in np.flatnonzero(back):
        members = np.flatnonzero(start.association == e)
        plan = set_structure(plan, scenario, e, members, _structure(start, e, members))
        allocations[e] = (members, kept_allocation(start, members, start_energy[e]))
    messages = [f"cluster of edge {scenario.edges.ids[e]}: its plan takes {periods[e]:.9g} s per period, above "
                f"{budget:.9g} s" for e in np.flatnonzero(late & ~meets) if e in allocations]
    return (apply_allocation(plan, allocations) if back.any() else final), back, messages


def _start_costs(scenario: Scenario, start: Plan, round_cap_s: float) -> tuple[np.ndarray, np.ndarray]:
    """The start's :func:`cluster_costs`, its periods infinite (no cluster falls back to it) when its edge rounds
    miss ``round_cap_s`` (s)."""
    periods, energies = cluster_costs(scenario, start.replace(deadline_s=None))
    if start.e_agg > 1 and evaluate(scenario, start).round_end_s[0] > round_cap_s * (1 + BUDGET_RTOL):
        periods = np.full_like(periods, np.inf)
    return periods, energies


# ---------------------------------------------------------------------- the search
def _price(scenario, plan, e, structure, members, budget, round_cap_s=np.inf):
    trial = set_structure(plan, scenario, e, members, structure)
    return solve_cluster(cluster_data(scenario, trial, e, round_cap_s), budget), trial


def _local_search(scenario, plan, e, members, best, budget, counter, max_evals=200, round_cap_s=np.inf):
    """Improve cluster ``e``'s structure by single moves; returns (allocation, plan)."""
    alloc, current = best
    improved = True
    while improved and counter[0] < max_evals:
        improved = False
        for structure in neighbours(scenario, current, e, members):
            counter[0] += 1
            cand, trial = _price(scenario, current, e, structure, members, budget, round_cap_s)
            if cand.feasible and cand.energy_j < alloc.energy_j * (1 - 1e-9):
                alloc, current, improved = cand, trial, True
                break
    return alloc, current


def structure_key(e: int, structure) -> tuple:
    """A hashable name of cluster ``e``'s structure (the keys of :func:`best_structure`'s ``known`` floors)."""
    return (e,) if structure is None else (e, int(structure[0]), tuple(int(p) for p in structure[1]))


def _known_floor(known: dict | None, key: tuple, budget: float) -> float:
    """The energy priced for ``key`` within a budget at least ``budget`` (a floor here), else 0."""
    at, energy = (known or {}).get(key, (0.0, 0.0))
    return energy if at >= budget else 0.0


def best_structure(scenario: Scenario, start: Plan, budget: float, exact: bool, local_search: bool,
                   local_search_max_n: int, milp: dict | None, exact_cluster_limit: float, known: dict | None,
                   e: int, round_cap_s: float = np.inf):
    """Cluster ``e``'s least-energy structure within the period budget (and each edge round but the last within
    ``round_cap_s``, s): (structure, allocation, structures priced,
    certified, enumerated, priced, floor); (None, None, count, certified, enumerated, priced, floor) when no
    structure meets the budget. ``floor`` is a proven lower bound on the cluster's least energy (J per period):
    the optimum of an enumerated, certified cluster, else :func:`.bounds.cluster_lower_bound` with the certified
    optimum of the direct uploads (priced first, as their screening floor is 0) as its direct floor. ``known`` maps
    :func:`structure_key` to (budget, energy) priced before: the least energy within a larger
    budget is a floor within a smaller one (energy never rises with the budget); ``priced`` holds this call's.
    Structures are None (direct) or (root, parent), screened first (:mod:`.screening`): they are priced in the
    order of their proven energy floor until the floor reaches the best energy found (the rest cannot beat it) or
    is infinite (the rest cannot meet the budget). ``enumerated``: every structure was priced or screened out
    (exact mode, or a cluster with at most ``exact_cluster_limit`` of them); ``certified``: every inner problem
    priced was solved to proven optimality or infeasibility (so an enumerated, certified cluster is at its
    optimum)."""
    members = np.flatnonzero(start.association == e)
    exact = exact or cluster_exact_choices(scenario, members) <= exact_cluster_limit
    descends = local_search and not exact and len(members) > local_search_max_n
    structures = cluster_structures(scenario, start, e, exact, budget / max(2 * start.e_agg, 1), milp,
                                    DESCENT_ROOTS if descends else 4)
    trials = [set_structure(start, scenario, e, members, structure) for structure in structures]
    keys = [structure_key(e, structure) for structure in structures]
    floors = [max(structure_bound(cluster_data(scenario, trial, e), budget), _known_floor(known, key, budget))
              for trial, key in zip(trials, keys)]
    best, counter, certified, priced, direct_floor = None, [0], True, {}, 0.0
    for i in sorted(range(len(structures)), key=floors.__getitem__):  # stable: ties keep the candidates' order
        if not np.isfinite(floors[i]) or (best is not None and floors[i] >= best[0].energy_j):
            break  # this and every later structure proven infeasible or no better than the best (screening)
        counter[0] += 1
        alloc = solve_cluster(cluster_data(scenario, trials[i], e, round_cap_s), budget)
        certified &= alloc.certified
        if alloc.certified:
            priced[keys[i]] = (budget, alloc.energy_j)
            direct_floor = alloc.energy_j if structures[i] is None else direct_floor
        if alloc.feasible and (best is None or alloc.energy_j < best[0].energy_j):
            best = (alloc, trials[i])
    if exact and certified:
        floor = np.inf if best is None else best[0].energy_j
    else:
        direct = start.replace(aggregator=np.full(scenario.n_edges, -1), parent=np.full(scenario.n_devices, -1))
        floor = cluster_lower_bound(scenario, direct, e, budget, direct_floor)
    if best is None:
        return None, None, counter[0], certified, exact, priced, floor
    if local_search and not exact and len(members) <= local_search_max_n:
        best = _local_search(scenario, start, e, members, best, budget, counter, round_cap_s=round_cap_s)
    elif descends and descent_applies(scenario, best[1], e):
        alloc, trial, solves = descend(scenario, best[1], e, best[0], budget, round_cap_s=round_cap_s)
        counter[0] += solves
        best = (alloc, trial)
    alloc, trial = best
    return _structure(trial, e, members), alloc, counter[0], certified, exact, priced, floor


_JOB: tuple | None = None  # the shared (arguments, keywords) of best_structure in a forked worker


def _init_worker(job: tuple) -> None:
    """A forked worker: Ctrl-C left to the parent (:mod:`hffm_opt._pools`), ``job`` kept (inherited, never
    pickled), a fresh HiGHS scheduler (:func:`~hffm_opt.solvers.milp.forget_highs_threads`)."""
    global _JOB
    ignore_sigint()
    _JOB = job
    forget_highs_threads()


def _cluster_job(e: int):
    args, keywords = _JOB
    return best_structure(*args, e, **keywords)


def _pool(workers: int, job: tuple):
    """A pool of ``workers`` forked processes that see ``job`` (no pickling of the scenario) and leave Ctrl-C to
    this process (:func:`~hffm_opt._pools.start_pool`)."""
    return start_pool(multiprocessing.get_context("fork"), workers, _init_worker, (job,))


def _map_clusters(workers: int, job: tuple, edges: range, progress) -> list:
    """:func:`best_structure` of each cluster of ``edges`` (in order) on a :func:`_pool`; an error or Ctrl-C
    terminates the pool at once (a forked worker dies on SIGTERM, even inside a solver)."""
    pool = _pool(workers, job)
    try:
        results = pool.imap(_cluster_job, edges)
        found = list(progress(results) if progress else results)
        pool.close()
        pool.join()
    except BaseException:
        pool.terminate()
        raise
    return found


def optimise(model: JointModel, exact: bool = False, local_search: bool = True, local_search_max_n: int = 12,
             exact_limit: int = EXACT_LIMIT, exact_cluster_limit: float = EXACT_CLUSTER_LIMIT, progress=None,
             milp_solver: str | None = None, milp_time_limit: float = 60.0, milp_gap: float = 1e-2,
             workers: int = WORKERS, known: dict | None = None, energy_solver=None) -> Result:
    """Run F4 (or the exact enumeration) on ``model`` for its objective: :func:`optimise_energy` for ``energy``,
    else :mod:`.objectives` over energy solves at chosen targets (which share their priced structures), each by
    ``energy_solver`` (default :func:`optimise_energy`; the registry passes full F4's alternation,
    :func:`.alternation.alternate`, when the model has the full-F4 options,
    :attr:`~hffm_opt.formulations.joint.JointModel.alternates`). With those options the search starts from the
    faster of the start and its fastest placement, and the latency floor is proven over every placement and tier
    (:func:`.free_floor.free_latency_floor`; none with the association free: no latency bound then)."""
    options = {"exact": exact, "local_search": local_search, "local_search_max_n": local_search_max_n,
               "exact_limit": exact_limit, "exact_cluster_limit": exact_cluster_limit, "progress": progress,
               "milp_solver": milp_solver, "milp_time_limit": milp_time_limit, "milp_gap": milp_gap,
               "workers": workers}
    if model.objective == "energy":
        return optimise_energy(model, known=known, **options)
    known = {} if known is None else known
    limit = exact_limit if exact else exact_cluster_limit
    floor = None
    if model.alternates:  # every target's solve starts from the faster placement
        model, floor = free_latency_floor(model, limit)

    def solve_at(target: float) -> Result:
        at = model.at_target(target)
        if at.precheck_message:
            return Result(status=Status.INFEASIBLE, backend="f4", stats={"target_latency_s": target},
                          message=f"infeasible: {at.precheck_message}")
        return (energy_solver or optimise_energy)(at, known=known, **options)

    search = minimise_latency if model.objective == "latency" else minimise_weighted
    res = search(model, solve_at, limit, floor)
    if floor is not None and floor.lower <= 0 and model.objective == "latency" and res.ok:
        return dataclasses.replace(res, bound=None, status=Status.FEASIBLE,
                                   message=res.message + "; association free: no latency floor is claimed")
    return res


def optimise_energy(model: JointModel, exact: bool = False, local_search: bool = True, local_search_max_n: int = 12,
                    exact_limit: int = EXACT_LIMIT, exact_cluster_limit: float = EXACT_CLUSTER_LIMIT, progress=None,
                    milp_solver: str | None = None, milp_time_limit: float = 60.0, milp_gap: float = 1e-2,
                    workers: int = WORKERS, known: dict | None = None) -> Result:
    """Run F4 (or the exact enumeration) on ``model``'s target; see the module docstring. Clusters with at most
    ``exact_cluster_limit`` structures are enumerated exactly even outside the exact mode. ``milp_solver``
    (``"highs"``/``"gurobi"``) adds the F2 MILP's tree, solved within ``milp_time_limit`` s and ``milp_gap``, to
    small clusters' candidates; ``workers`` processes share the clusters (forked, when there are at least two
    clusters per worker). Raises :class:`~hffm_opt.errors.InstanceTooLarge` when the exact mode would enumerate more
    than ``exact_limit`` structures. ``known`` (a dict, updated in place) carries the energies priced by earlier
    calls on the same scenario and start: within a smaller target they are proven floors that spare pricing.

    Status: ``infeasible`` when some cluster has no structure that meets the target (the plan then keeps the
    starting plan's decisions there); ``optimal`` only when every cluster was enumerated and every inner problem
    solved to proven optimality (or proven infeasible), else ``feasible``. The bound sums, per cluster, the certified
    optimum of an enumerated cluster or the relaxation bound of :func:`~hffm_opt.solvers.f4.bounds.cluster_lower_bound`
    (optimality is up to the inner problems' relative budget margin of 1e-6).
    """
    t0 = time.perf_counter()
    scenario, start, target = model.scenario, model.start, model.target_latency_s
    backend = "f4:exact" if exact else f"f4:{milp_solver or 'fast'}"
    budget = start.e_agg * target
    if exact:
        count = count_exact_choices(scenario, start)
        if count > exact_limit:
            raise exact_too_large(count, "discrete choices (direct or a rooted spanning tree per cluster)",
                                  exact_limit)
    milp = None if milp_solver is None else {"solver": milp_solver, "time_limit": milp_time_limit, "mip_gap": milp_gap}
    job = ((scenario, start, budget, exact, local_search and not exact, local_search_max_n, milp, exact_cluster_limit,
            known), {"round_cap_s": model.round_cap_s})
    edges = range(scenario.n_edges)
    # not inside a sweep's worker process (a daemon may not have children; the sweep already uses the cores)
    if workers > 1 and scenario.n_edges >= 2 * workers and not multiprocessing.current_process().daemon:
        found = _map_clusters(workers, job, edges, progress)
    else:
        found = [best_structure(*job[0], e, **job[1]) for e in (progress(edges) if progress else edges)]
    plan, start_costs = start, _start_costs(scenario, start, model.round_cap_s)
    start_latency = start_costs[0]
    allocations: dict[int, tuple[np.ndarray, ClusterAllocation]] = {}
    messages, evaluated, proven = [], 0, np.zeros(scenario.n_edges, bool)
    cluster_energy, floors = np.zeros(scenario.n_edges), np.zeros(scenario.n_edges)
    for e, (structure, alloc, count, certified, enumerated, priced, floors[e]) in zip(edges, found):
        evaluated += count
        if known is not None:
            known.update(priced)
        proven[e] = certified and enumerated
        members = np.flatnonzero(plan.association == e)
        if alloc is None:  # keep the starting plan's decisions
            if start_latency[e] > budget * (1 + BUDGET_RTOL):
                messages.append(f"cluster of edge {scenario.edges.ids[e]}: no structure meets {target:.6g} s per round")
            continue
        plan = set_structure(plan, scenario, e, members, structure)
        allocations[e] = (members, alloc)
        cluster_energy[e] = alloc.energy_j
    name = "optimal-exact" if exact else "optimal"
    final, back, late = _guard(scenario, start, plan, allocations, budget, start_costs)
    proven &= ~back
    messages += late
    final = final.replace(scheduler=name)
    metrics = evaluate(scenario, final)
    if start.e_agg > 1 and metrics.round_end_s[0] > model.round_cap_s * (1 + BUDGET_RTOL):
        messages.append(f"its edge rounds end {metrics.round_end_s[0]:.9g} s after they start, above the round cap "
                        f"{model.round_cap_s:.9g} s")
    stats = {"target_latency_s": target, "start": model.start_name, "structures_priced": evaluated,
             "clusters_certified": int(proven.sum())}
    if messages:
        return Result(status=Status.INFEASIBLE, backend=backend, backend_version=__version__, build_s=model.build_s,
                      runtime_s=time.perf_counter() - t0, plan=final, metrics=metrics, stats=stats,
                      message="infeasible: " + "; ".join(messages))
    fixed = fixed_energy(scenario, start)
    if proven.all():
        status, bound = Status.OPTIMAL, metrics.energy_j
        message = "every structure of every cluster priced, every inner problem solved to proven optimality"
    elif exact:
        status, bound = Status.FEASIBLE, None
        message = "every structure enumerated, but some inner problem was not solved to proven optimality"
    else:
        status, bound = Status.FEASIBLE, float(np.where(proven, cluster_energy, floors).sum()) / start.e_agg
        message = (f"{int(proven.sum())} of {scenario.n_edges} clusters certified optimal by enumeration; the rest "
                   "bounded by the relaxation over every structure")
    return Result(status=status, objective=metrics.energy_j, bound=bound, fixed_objective=fixed, backend=backend,
                  backend_version=__version__, build_s=model.build_s, runtime_s=time.perf_counter() - t0, plan=final,
                  metrics=metrics, stats=stats, message=message)


def improve(model: JointModel, max_evals: int = 200) -> Result:
    """Local search from the model's starting plan: price each cluster's structure with the convex inner problem,
    then apply single moves while they lower the energy (at most ``max_evals`` structures priced per cluster).

    Monotone: in a cluster whose start meets the target the incumbent is the cheaper of the start's own decisions
    and its structure's convex optimum, and the result never costs more nor takes longer than the start (every
    cluster is priced again by the evaluator, :func:`_guard`). ``infeasible`` only when some cluster's start
    misses the target and its structure cannot meet it either."""
    t0 = time.perf_counter()
    scenario, start, target = model.scenario, model.start, model.target_latency_s
    budget = start.e_agg * target
    start_costs = cluster_costs(scenario, start.replace(deadline_s=None))
    plan, allocations, messages, counter = start, {}, [], [0]
    for e in range(scenario.n_edges):
        members = np.flatnonzero(plan.association == e)
        alloc, trial = _price(scenario, plan, e, _structure(plan, e, members), members, budget)
        counter[0] += 1
        if start_costs[0][e] <= budget * (1 + BUDGET_RTOL) and not (alloc.feasible
                                                                     and alloc.energy_j < start_costs[1][e]):
            alloc, trial = kept_allocation(start, members, start_costs[1][e]), plan  # the start is the incumbent
        elif not alloc.feasible:
            messages.append(alloc.message)
            continue
        alloc, plan = _local_search(scenario, plan, e, members, (alloc, trial), budget, counter, max_evals)
        allocations[e] = (members, alloc)
    final, _, late = _guard(scenario, start, plan, allocations, budget, start_costs)
    messages += late
    final = final.replace(scheduler="local-search")
    metrics = evaluate(scenario, final)
    return Result(status=Status.INFEASIBLE if messages else Status.FEASIBLE,
                  objective=None if messages else metrics.energy_j, backend="f4:local-search",
                  backend_version=__version__, build_s=model.build_s, runtime_s=time.perf_counter() - t0, plan=final,
                  metrics=metrics, message="; ".join(messages),
                  stats={"target_latency_s": target, "start": model.start_name, "structures_priced": counter[0]})
