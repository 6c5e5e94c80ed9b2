"""Full F4's exact mode, and the cluster enumeration full F4 shares with it.

Given the association and each device's module set, clusters are independent (each must finish its period within
``e_agg`` x target; energy and utility are sums). :func:`price_cluster` prices one cluster exactly: every structure
(direct and every rooted spanning arborescence), and, on a D2D structure, every split of the modules that may stay
in the cluster between the aggregator and the edge tier, each with the convex inner problem, screened by
:func:`.screening.structure_bound`. The edge tier dominates the cloud for a module that may stay in the cluster
(fewer backhaul bits never lengthen a period nor cost energy, and the utility does not depend on the tier); the
aggregator tier does not dominate the edge (it spares the aggregator's upload and the edge downlink but costs a
last-round broadcast down the tree), so both are priced. :func:`best_cluster_choice` adds every module assignment of
the cluster's members within the coverage rule.

:func:`exact_full` enumerates every association (over the candidate edges) and every module assignment; each
distinct (cluster, members, their assignment) is priced once and the combinations are compared by sums. It refuses,
with the count, instances whose association x assignment choices exceed the limit
(:class:`~hffm_opt.errors.InstanceTooLarge`).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

import numpy as np

from ..._version import __version__
from ...evaluate import evaluate
from ...formulations.cluster import cluster_data
from ...formulations.joint import JointModel, candidate_edges, covers, edge_allowed
from ...formulations.placement import module_value
from ...network.scenario import Scenario
from ...plan import AGG, CLOUD, EDGE, Plan
from ..result import Result, Status
from .bounds import fixed_energy
from .cluster import ClusterAllocation, apply_allocation, solve_cluster
from .screening import structure_bound
from .structures import cluster_exact_choices, cluster_structures, exact_too_large, set_structure

CHOICES_LIMIT = 20_000  # association x assignment combinations the exact mode enumerates at most
MAX_ENUMERATED_CANDIDATES = 12  # a device with more trainable modules counts 2^n - 1 module sets (no listing)


def base_tiers(scenario: Scenario, edge_tiers: bool) -> np.ndarray:
    """(K,) int8 tier of each module before the aggregator tier is priced: the edge where it may stay in its
    cluster (dominance, module docstring), else the cloud."""
    return np.where(edge_allowed(scenario, edge_tiers), EDGE, CLOUD).astype(np.int8)


def module_sets(scenario: Scenario, coverage: str, u: int) -> list[tuple[int, ...]]:
    """Device ``u``'s module sets: every trainable module of Need(u) (coverage full), else every non-empty subset
    that fits its memory."""
    mods = scenario.module_arrays
    cand = tuple(int(k) for k in np.flatnonzero(scenario.need[u] & mods["trainable"]))
    if coverage == "full" or not cand:
        return [cand]
    free = scenario.devices.memory_bytes[u] - scenario.need[u] @ mods["memory_bytes"]
    return [s for r in range(1, len(cand) + 1) for s in itertools.combinations(cand, r)
            if mods["train_memory_bytes"][list(s)].sum() <= free]


def module_set_count(scenario: Scenario, coverage: str, u: int) -> float:
    """How many module sets :func:`module_sets` lists for device ``u`` (an upper bound, without listing them, for
    a device with more than :data:`MAX_ENUMERATED_CANDIDATES` trainable modules)."""
    n_cand = int((scenario.need[u] & scenario.module_arrays["trainable"]).sum())
    if coverage == "full" or n_cand == 0:
        return 1.0
    return 2.0 ** n_cand - 1 if n_cand > MAX_ENUMERATED_CANDIDATES else float(len(module_sets(scenario, coverage, u)))


def cluster_choice_count(scenario: Scenario, model: JointModel, members: np.ndarray, limit: float) -> float:
    """Upper bound on what :func:`best_cluster_choice` prices for a cluster of ``members``: module assignments x
    (direct + structures x aggregator/edge splits); stops counting (returns inf) once above ``limit``."""
    if not len(members):
        return 0.0
    movable = (scenario.need[members] & scenario.module_arrays["trainable"][None, :]).any(axis=0)
    splits = 2.0 ** int((movable & edge_allowed(scenario, model.edge_tiers)).sum())
    count = 1.0 + (cluster_exact_choices(scenario, members) - 1.0) * splits
    for u in members:
        count *= module_set_count(scenario, model.coverage, int(u))
        if count > limit:
            return float("inf")
    return count


@dataclass(frozen=True)
class ClusterChoice:
    """One cluster's best decisions found by enumeration: its ``score`` (J per edge round less ``w_U`` x utility),
    the members' module ``sets``, the ``structure`` (None or (root, parent over the members)), the cluster's
    ``tier`` row (K,), the continuous decisions ``alloc``, how many inner problems were ``priced`` and whether
    every one was ``certified`` (solved to proven optimality or infeasibility)."""

    score: float
    sets: tuple
    structure: object
    tier: np.ndarray
    alloc: ClusterAllocation
    priced: int
    certified: bool


def price_cluster(scenario: Scenario, plan: Plan, e: int, budget: float, stay: np.ndarray):
    """Cluster ``e``'s least period energy within ``budget`` (s) with ``plan``'s members, module sets and base tiers:
    every structure and, on a D2D structure, every split of the trained modules ``stay`` (K,) at the edge in
    ``plan`` between the edge and the aggregator tier (module docstring). Returns (allocation, structure, tier
    row, inner problems priced, certified); allocation None when nothing meets the budget."""
    members = np.flatnonzero(plan.association == e)
    movable = np.flatnonzero(stay & plan.train[members].any(axis=0) & (plan.tier[e] == EDGE))
    splits = [s for r in range(len(movable) + 1) for s in itertools.combinations(movable.tolist(), r)]
    trials = []
    for structure in cluster_structures(scenario, plan, e, True, budget):
        for split in ([()] if structure is None else splits):
            tier = plan.tier.copy()
            tier[e, list(split)] = AGG
            trials.append((structure, set_structure(plan.replace(tier=tier), scenario, e, members, structure)))
    floors = [structure_bound(cluster_data(scenario, trial, e), budget) for _, trial in trials]
    best, priced, certified = None, 0, True
    for i in sorted(range(len(trials)), key=floors.__getitem__):  # stable: ties keep the listing order
        if not np.isfinite(floors[i]) or (best is not None and floors[i] >= best[0].energy_j):
            break  # this and every later trial proven infeasible or no better than the best
        alloc = solve_cluster(cluster_data(scenario, trials[i][1], e), budget)
        priced += 1
        certified &= alloc.certified
        if alloc.feasible and (best is None or alloc.energy_j < best[0].energy_j):
            best = (alloc, i)
    if best is None:
        return None, None, None, priced, certified
    structure, trial = trials[best[1]]
    return best[0], structure, trial.tier[e].copy(), priced, certified


def set_rows(sets, n_modules: int) -> np.ndarray:
    """(n, K) bool training rows of n devices from their module ``sets`` (tuples of module indices)."""
    rows = np.zeros((len(sets), n_modules), bool)
    for i, modules in enumerate(sets):
        rows[i, list(modules)] = True
    return rows


def cluster_plan(scenario: Scenario, plan: Plan, e: int, members, sets, tier_row) -> Plan:
    """``plan`` with cluster ``e`` made of exactly ``members`` (the other devices elsewhere), training ``sets``,
    with ``tier_row`` and without D2D structure."""
    n_e = scenario.n_edges
    inside = np.zeros(scenario.n_devices, bool)
    inside[list(members)] = True
    assoc = np.where(inside, e, np.where(plan.association == e, (e + 1) % n_e, plan.association))
    train, tier = plan.train.copy(), plan.tier.copy()
    train[list(members)] = set_rows(sets, train.shape[1])
    tier[e] = tier_row
    plan = plan.replace(association=assoc, train=train, tier=tier)
    return set_structure(plan, scenario, e, np.asarray(members, dtype=np.int64), None)


def price_sets(scenario: Scenario, model: JointModel, plan: Plan, e: int, members: tuple, sets: tuple, budget: float,
               value: np.ndarray) -> ClusterChoice | None:
    """Cluster ``e`` made of ``members`` training ``sets``, priced by :func:`price_cluster` from the base tiers
    (:func:`base_tiers`): None when the sets miss the coverage rule, a choice of infinite score when nothing meets
    ``budget``."""
    if not covers(scenario, members, np.zeros(len(members)), set_rows(sets, len(scenario.modules)), model.min_trainers):
        return None
    trial = cluster_plan(scenario, plan, e, members, sets, base_tiers(scenario, model.edge_tiers))
    alloc, structure, tier, priced, certified = price_cluster(scenario, trial, e, budget,
                                                              edge_allowed(scenario, model.edge_tiers))
    utility = float(sum(value[u, list(s)].sum() for u, s in zip(members, sets)))
    score = np.inf if alloc is None else alloc.energy_j / plan.e_agg - model.w_U * utility
    return ClusterChoice(score, sets, structure, tier, alloc, priced, certified)


def best_cluster_choice(scenario: Scenario, model: JointModel, plan: Plan, e: int, budget: float,
                        value: np.ndarray) -> ClusterChoice | None:
    """Cluster ``e``'s best module assignment (within the coverage rule), tiers and structure with ``plan``'s
    members (:func:`price_sets` for each assignment): the least score, with the inner problems priced and their
    certification summed over every assignment; None when no assignment meets ``budget``."""
    members = tuple(int(u) for u in np.flatnonzero(plan.association == e))
    best, priced, certified = None, 0, True
    for sets in itertools.product(*(module_sets(scenario, model.coverage, u) for u in members)):
        found = price_sets(scenario, model, plan, e, members, sets, budget, value)
        if found is None:
            continue
        priced += found.priced
        certified &= found.certified
        if np.isfinite(found.score) and (best is None or found.score < best.score):
            best = found
    return None if best is None else ClusterChoice(best.score, best.sets, best.structure, best.tier, best.alloc,
                                                   priced, certified)


def write_choice(scenario: Scenario, plan: Plan, e: int, choice: ClusterChoice) -> Plan:
    """``plan`` with cluster ``e``'s module sets, tier row, structure and continuous decisions from ``choice``."""
    members = np.flatnonzero(plan.association == e)
    train, tier = plan.train.copy(), plan.tier.copy()
    train[members] = set_rows(choice.sets, train.shape[1])
    tier[e] = choice.tier
    plan = set_structure(plan.replace(train=train, tier=tier), scenario, e, members, choice.structure)
    return apply_allocation(plan, {e: (members, choice.alloc)})


def exact_full(model: JointModel, exact_limit: float = CHOICES_LIMIT, **_options) -> Result:
    """The certified optimum of full F4 on ``model`` (module docstring). Status ``optimal`` when every inner
    problem was proven; the bound (on the energy) only with ``w_U = 0``, where the score is the energy."""
    t0 = time.perf_counter()
    scenario, start, target = model.scenario, model.start, model.target_latency_s
    n, n_e, g = scenario.n_devices, scenario.n_edges, start.e_agg
    budget = g * target
    if model.association == "optimise":
        allowed = candidate_edges(scenario, model.assoc_candidates)
    else:
        allowed = np.zeros((n, n_e), bool)
        allowed[np.arange(n), start.association] = True
    edges_of = [np.flatnonzero(allowed[u]).tolist() for u in range(n)]
    sets_of = [module_sets(scenario, model.coverage, u) for u in range(n)]
    count = float(np.prod([len(x) for x in edges_of], dtype=float) * np.prod([len(x) for x in sets_of], dtype=float))
    if count > exact_limit:
        raise exact_too_large(count, "association x module-assignment choices", exact_limit)
    value = module_value(scenario)
    base = start.replace(tier=np.tile(base_tiers(scenario, model.edge_tiers), (n_e, 1)), aggregator=np.full(n_e, -1),
                         parent=np.full(n, -1))
    cache: dict = {}
    priced, certified = 0, True

    def cluster(e, members, sets) -> float:
        nonlocal priced, certified
        key = (e, members, sets)
        if key not in cache:
            found = price_sets(scenario, model, base, e, members, sets, budget, value) if members else None
            cache[key] = found
            if found is not None:
                priced += found.priced
                certified &= found.certified
        found = cache[key]
        return (0.0 if not members else np.inf) if found is None else found.score

    best, choice = np.inf, None
    for assoc in itertools.product(*edges_of):
        groups = [tuple(u for u in range(n) if assoc[u] == e) for e in range(n_e)]
        for sets in itertools.product(*sets_of):
            total = sum(cluster(e, groups[e], tuple(sets[u] for u in groups[e])) for e in range(n_e))
            if total < best and (choice is None or total < best - 1e-12 * abs(best)):
                best, choice = total, (assoc, sets)
    stats = {"target_latency_s": target, "start": model.start_name, "choices": int(count), "structures_priced": priced,
             "iterations": 0}
    if choice is None:
        return Result(status=Status.INFEASIBLE, backend="f4:exact", backend_version=__version__, build_s=model.build_s,
                      runtime_s=time.perf_counter() - t0, stats=stats,
                      message=f"infeasible: no association and module assignment meets {target:.6g} s per round")
    assoc, sets = choice
    plan = base.replace(association=np.array(assoc))
    for e in range(n_e):
        members = tuple(u for u in range(n) if assoc[u] == e)
        if members:
            plan = write_choice(scenario, plan, e, cache[(e, members, tuple(sets[u] for u in members))])
    final = plan.replace(scheduler="optimal-exact", deadline_s=None)
    metrics = evaluate(scenario, final)
    stats["utility"] = float((value * final.train).sum())
    stats["score"] = metrics.energy_j - model.w_U * stats["utility"]
    stats["aggregator_tier_modules"] = int((final.tier == AGG).sum())
    status = Status.OPTIMAL if certified else Status.FEASIBLE
    bound = metrics.energy_j if certified and model.w_U == 0 else None
    return Result(status=status, objective=metrics.energy_j, bound=bound,
                  fixed_objective=fixed_energy(scenario, final), backend="f4:exact", backend_version=__version__,
                  build_s=model.build_s, runtime_s=time.perf_counter() - t0, plan=final, metrics=metrics, stats=stats,
                  message="every association, module assignment, tier split and structure enumerated, each with the "
                  "convex inner problem" + ("" if certified else " (some inner problem not proven optimal)")
                  + ("" if bound is not None or not certified else "; the score (energy less w_U x utility) is "
                     "optimal, no bound on the energy alone is claimed"))
