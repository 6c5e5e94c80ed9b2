"""Full F4's exact mode: every association (over the candidate edges) and every module assignment within the
coverage rule, each cluster priced by the exact structure enumeration (:func:`.decomposition.best_structure`).

Given the association and the assignment, clusters are independent (each must finish its period within
``e_agg`` x target; energy and utility are sums), so each distinct (cluster, members, their assignment) is priced
once and the combinations are compared by sums. Tiers are not enumerated: a module that may stay at the edge is
put there, which is optimal by dominance (fewer backhaul bits never lengthen a period nor cost energy, and the
utility does not depend on the tier). Refuses, with the count, instances whose association x assignment choices
exceed the limit (:class:`~hffm_opt.errors.InstanceTooLarge`).
"""

from __future__ import annotations

import itertools
import time

import numpy as np

from ..._version import __version__
from ...errors import InstanceTooLarge
from ...evaluate import evaluate
from ...formulations.joint import JointModel
from ...formulations.placement import module_value
from ...plan import CLOUD, EDGE
from ..result import Result, Status
from .alternation import candidate_edges, edge_allowed
from .bounds import fixed_energy
from .cluster import apply_allocation
from .decomposition import best_structure
from .structures import set_structure

CHOICES_LIMIT = 20_000  # association x assignment combinations the exact mode enumerates at most


def _subsets(scenario, model: JointModel, u: int) -> list[tuple[int, ...]]:
    """Device ``u``'s module sets: every trainable module of Need(u) (coverage full), else every non-empty subset
    that fits its memory."""
    mods = scenario.module_arrays
    cand = tuple(int(k) for k in np.flatnonzero(scenario.need[u] & mods["trainable"]))
    if model.coverage == "full" or not cand:
        return [cand]
    free = scenario.devices.memory_bytes[u] - scenario.need[u] @ mods["memory_bytes"]
    return [s for r in range(1, len(cand) + 1) for s in itertools.combinations(cand, r)
            if mods["train_memory_bytes"][list(s)].sum() <= free]


def _covered(scenario, model: JointModel, members, sets) -> bool:
    cand = scenario.need[members] & scenario.module_arrays["trainable"][None, :]
    trained = np.zeros(cand.shape, bool)
    for i, s in enumerate(sets):
        trained[i, list(s)] = True
    need = np.minimum(model.min_trainers, cand.sum(axis=0))
    return bool((trained.sum(axis=0) >= need).all())


def exact_full(model: JointModel, exact_limit: float = CHOICES_LIMIT, **_options) -> Result:
    """The certified optimum of full F4 on ``model`` (module docstring)."""
    t0 = time.perf_counter()
    scenario, start, target = model.scenario, model.start, model.target_latency_s
    n, n_e, n_k, g = scenario.n_devices, scenario.n_edges, len(scenario.modules), start.e_agg
    budget = g * target
    if model.association == "optimise":
        allowed = candidate_edges(scenario, model.assoc_candidates)
    else:
        allowed = np.zeros((n, n_e), bool)
        allowed[np.arange(n), start.association] = True
    edges_of = [np.flatnonzero(allowed[u]).tolist() for u in range(n)]
    sets_of = [_subsets(scenario, model, u) for u in range(n)]
    count = float(np.prod([len(x) for x in edges_of], dtype=float) * np.prod([len(x) for x in sets_of], dtype=float))
    if count > exact_limit:
        raise InstanceTooLarge(f"exact mode = {count:.0f} association x module-assignment choices: above the limit of "
                               f"{exact_limit:.0f}; use 'optimal'")
    tier = np.where(scenario.module_arrays["cluster_local"] | edge_allowed(scenario, model.edge_tiers), EDGE, CLOUD)
    tier = np.tile(tier.astype(np.int8), (n_e, 1))
    value = module_value(scenario)
    base = start.replace(tier=tier, aggregator=np.full(n_e, -1), parent=np.full(n, -1))
    cache: dict = {}
    priced, certified = 0, True

    def cluster(e, members, sets):
        nonlocal priced, certified
        key = (e, members, sets)
        if key not in cache:
            if not members:
                cache[key] = (0.0, None, None)
            elif not _covered(scenario, model, list(members), sets):
                cache[key] = (np.inf, None, None)
            else:
                inside = np.zeros(n, bool)
                inside[list(members)] = True
                assoc = np.where(inside, e, (e + 1) % n_e)  # the others anywhere else: this cluster is exactly members
                train = base.train.copy()
                for u, s in zip(members, sets):
                    train[u] = False
                    train[u, list(s)] = True
                plan = base.replace(association=assoc, train=train)
                structure, alloc, cnt, cert, *_ = best_structure(scenario, plan, budget, True, False, 0, None,
                                                                   np.inf, None, e)
                priced += cnt
                certified &= cert
                utility = float(sum(value[u, list(s)].sum() for u, s in zip(members, sets)))
                cache[key] = (np.inf, None, None) if alloc is None else (
                    alloc.energy_j / g - model.w_U * utility, structure, alloc)
        return cache[key]

    best, choice = np.inf, None
    for assoc in itertools.product(*edges_of):
        groups = [tuple(u for u in range(n) if assoc[u] == e) for e in range(n_e)]
        for sets in itertools.product(*sets_of):
            total = sum(cluster(e, groups[e], tuple(sets[u] for u in groups[e]))[0] for e in range(n_e))
            if total < best and (choice is None or total < best - 1e-12 * abs(best)):
                best, choice = total, (assoc, sets)
    stats = {"target_latency_s": target, "start": model.start_name, "choices": int(count), "structures_priced": priced,
             "iterations": 0}
    if choice is None:
        return Result(status=Status.INFEASIBLE, backend="f4:exact", backend_version=__version__, build_s=model.build_s,
                      runtime_s=time.perf_counter() - t0, stats=stats,
                      message=f"infeasible: no association and module assignment meets {target:.6g} s per round")
    assoc, sets = choice
    train = np.zeros((n, n_k), bool)
    for u, s in enumerate(sets):
        train[u, list(s)] = True
    plan = base.replace(association=np.array(assoc), train=train)
    allocations = {}
    for e in range(n_e):
        members = tuple(u for u in range(n) if assoc[u] == e)
        if members:
            _, structure, alloc = cluster(e, members, tuple(sets[u] for u in members))
            plan = set_structure(plan, scenario, e, np.array(members), structure)
            allocations[e] = (np.array(members), alloc)
    final = apply_allocation(plan, allocations).replace(scheduler="optimal-exact")
    metrics = evaluate(scenario, final)
    stats["utility"] = float((value * final.train).sum())
    stats["score"] = metrics.energy_j - model.w_U * stats["utility"]
    status = Status.OPTIMAL if certified else Status.FEASIBLE
    return Result(status=status, objective=metrics.energy_j, bound=metrics.energy_j if certified else None,
                  fixed_objective=fixed_energy(scenario, final), backend="f4:exact", backend_version=__version__,
                  build_s=model.build_s, runtime_s=time.perf_counter() - t0, plan=final, metrics=metrics, stats=stats,
                  message="every association and module assignment enumerated, each cluster by exact structure "
                  "enumeration" + ("" if certified else " (some inner problem not proven optimal)"))
