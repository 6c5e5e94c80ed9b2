"""Full F4: the alternation F1 (placement and tiers) -> association -> F2/structures + F3 -> evaluate (section 4).

The energy-at-target F4 of :mod:`.decomposition` optimises the relay structures and the continuous decisions
with the start's module assignment, tiers and association. When the model leaves those free
(:attr:`~hffm_opt.formulations.joint.JointModel.alternates`), :func:`alternate` starts from that solve and repeats

1. **F1** (:func:`placement_step`): the placement MILP priced at the incumbent's structures and continuous
   decisions (:func:`~hffm_opt.formulations.placement.build_f4_placement`, exactly the evaluator's accounting);
   its decision is written into the plan, priced by ``evaluate`` (which must agree with the program's figures),
   then the clusters whose placement changed get the cluster step again;
2. **association** (:func:`association_step`): the association MILP over each device's ``assoc_candidates``
   nearest edges (reserving the bandwidth it prices at) proposes moves; all of them together, else the single
   moves in the order of the program's estimated saving, each followed by the cluster step (structures + F3) of
   the two clusters it changes;

accepting a candidate only when ``evaluate``'s objective (energy per edge round less ``w_U`` x utility) falls by
more than ``tolerance`` (relative) and the latency per edge round still meets the target. It stops when an
iteration accepts nothing or after ``max_iterations``: the result is never worse than the start's F4 solve, which
is never worse than the start. The Result's ``stats["iterations"]`` counts the iterations run.

Bound: with the association fixed (or no device with a second candidate) and coverage ``"full"``, the
relaxation of :func:`~.bounds.cluster_bounds` with every module that may stay at the edge at the edge (fewer
backhaul bits never cost more, so it bounds every tier choice); otherwise none is claimed (status ``feasible``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..._version import __version__
from ...evaluate import evaluate
from ...formulations.association import build_association
from ...formulations.joint import JointModel
from ...formulations.placement import build_f4_placement, module_value
from ...network.scenario import Scenario
from ...plan import CLOUD, EDGE, Plan
from ..milp import solve_milp
from ..result import Result, Status
from .bounds import cluster_bounds, fixed_energy
from .cluster import apply_allocation
from .decomposition import best_structure, cluster_costs, optimise_energy
from .structures import set_structure

LATENCY_RTOL = 1e-9  # relative: a candidate slower than the target by more is refused
FIGURE_RTOL = 1e-6  # relative: F1's own figures and evaluate's must agree this closely, else the step is dropped
SINGLE_MOVES = 6  # association: single moves tried per iteration when the proposal as a whole does not improve


@dataclass(frozen=True)
class Inner:
    """The cluster step's options (as :func:`.decomposition.optimise_energy` takes them)."""

    exact: bool = False
    local_search: bool = True
    local_search_max_n: int = 12
    milp: dict | None = None
    exact_cluster_limit: float = 200
    milp_solver: str = "highs"
    milp_time_limit: float = 60.0
    milp_gap: float = 1e-2


def edge_allowed(scenario: Scenario, edge_tiers: bool) -> np.ndarray:
    """(K,) modules that may stay at the edge: the cluster-local ones, or every module with ``edge_tiers``."""
    local = scenario.module_arrays["cluster_local"]
    return np.ones_like(local) if edge_tiers else local.copy()


def candidate_edges(scenario: Scenario, k: int) -> np.ndarray:
    """(U, E) bool: each device's ``k`` nearest edges with a finite uplink gain (ties by edge index)."""
    dev, edges = scenario.devices, scenario.edges
    dist = np.linalg.norm(dev.position_m[:, None, :] - edges.position_m[None, :, :], axis=2)
    dist = np.where(np.isfinite(dev.uplink_gain), dist, np.inf)
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    out = np.zeros(dist.shape, bool)
    np.put_along_axis(out, order, True, axis=1)
    return out & np.isfinite(dist)


def score(scenario: Scenario, plan: Plan, target: float, w_U: float, value: np.ndarray):
    """(objective, metrics) of ``plan``: energy per edge round less ``w_U`` x utility; None when it misses the
    target or cannot be priced."""
    try:
        m = evaluate(scenario, plan)
    except ValueError:
        return None
    if m.latency_s > target * (1 + LATENCY_RTOL):
        return None
    return m.energy_j - w_U * float((value * plan.train).sum()), m


def reoptimise(scenario: Scenario, plan: Plan, edges, budget: float, inner: Inner) -> Plan | None:
    """The cluster step on ``edges``: each cluster's best structure and continuous decisions within the period
    ``budget`` (:func:`.decomposition.best_structure`); None when one of them has no structure that meets it."""
    allocations = {}
    for e in sorted(set(int(e) for e in edges)):
        members = np.flatnonzero(plan.association == e)
        if not len(members):
            continue
        structure, alloc, *_ = best_structure(scenario, plan, budget, inner.exact, inner.local_search and not inner.exact,
                                              inner.local_search_max_n, inner.milp, inner.exact_cluster_limit, None, e)
        if alloc is None:
            return None
        plan = set_structure(plan, scenario, e, members, structure)
        allocations[e] = (members, alloc)
    return apply_allocation(plan, allocations)


def placement_step(model: JointModel, plan: Plan, inner: Inner, info: dict) -> list[Plan]:
    """F1 on ``plan``'s structures and continuous decisions, then the cluster step where the placement changed:
    the candidate plans (empty when F1 changes nothing or fails)."""
    scenario, budget = model.scenario, plan.e_agg * model.target_latency_s
    f1 = build_f4_placement(scenario, plan, budget, coverage=model.coverage, min_trainers=model.min_trainers,
                            w_U=model.w_U, edge_ok=edge_allowed(scenario, model.edge_tiers))
    res = solve_milp(f1, inner.milp_solver, time_limit=inner.milp_time_limit, mip_gap=min(inner.milp_gap, 1e-4))
    info["f1_solves"] = info.get("f1_solves", 0) + 1
    if not res.ok or not res.decision:
        info["f1_failures"] = info.get("f1_failures", 0) + 1
        return []
    d = res.decision
    trial = plan.replace(train=d["train"], tier=d["tier"])
    rows = np.bincount(plan.association, weights=(trial.train != plan.train).any(axis=1), minlength=scenario.n_edges)
    changed = np.flatnonzero((trial.tier != plan.tier).any(axis=1) | (rows > 0))
    if not changed.size:
        return []
    periods, energies = cluster_costs(scenario, trial)
    priced = np.isfinite(d["period_s"])
    agree = (np.allclose(periods[priced], d["period_s"][priced], rtol=FIGURE_RTOL, atol=1e-9)
             and np.allclose(energies[priced], d["energy_j"][priced], rtol=FIGURE_RTOL, atol=1e-9))
    info["f1_agrees"] = info.get("f1_agrees", True) and agree
    if not agree:  # never trust a program whose figures the evaluator does not reproduce
        return []
    again = reoptimise(scenario, trial, changed, budget, inner)
    return [trial] + ([again] if again is not None else [])


def _reset(plan: Plan, scenario: Scenario, edges) -> Plan:
    """``plan`` with the clusters ``edges`` uploading straight to their edge (no D2D structure, no aggregator tier)."""
    tier = plan.tier.copy()
    for e in edges:
        members = np.flatnonzero(plan.association == e)
        plan = set_structure(plan, scenario, e, members, None)
        tier[e] = np.where(tier[e] == 0, EDGE, tier[e])
    return plan.replace(tier=tier)


def move(scenario: Scenario, plan: Plan, devices, to, inner: Inner, budget: float) -> Plan | None:
    """``plan`` with ``devices`` associated with edges ``to``, the changed clusters' structures reset and the
    cluster step run on them (None when a changed cluster cannot meet the budget)."""
    devices, to = np.atleast_1d(devices), np.atleast_1d(to)
    affected = set(plan.association[devices].tolist()) | set(to.tolist())
    plan = _reset(plan, scenario, affected)
    assoc = plan.association.copy()
    assoc[devices] = to
    return reoptimise(scenario, plan.replace(association=assoc), affected, budget, inner)


def association_step(model: JointModel, plan: Plan, inner: Inner, candidates: np.ndarray, best: float,
                     info: dict, value: np.ndarray):
    """The association MILP's proposal, all moves at once, else single moves: (plan, score) of the best candidate
    that improves on ``best``, or None."""
    scenario, target = model.scenario, model.target_latency_s
    g, budget = plan.e_agg, plan.e_agg * model.target_latency_s
    dev, mods, edges = scenario.devices, scenario.module_arrays, scenario.edges
    bits = plan.train @ mods["update_bits"]
    batch = np.minimum(plan.batch_size, dev.samples.sum(axis=1))
    compute = plan.local_steps * batch * (plan.train @ mods["flops_per_sample"]) / dev.flops_per_cycle / dev.cpu_hz
    cloud_bits = np.array([((plan.train[plan.association == e].any(axis=0)) & (plan.tier[e] == CLOUD))
                           @ mods["update_bits"] for e in range(scenario.n_edges)])
    t_bh = np.where(cloud_bits > 0, edges.backhaul_delay_s + cloud_bits / edges.backhaul_rate_bps, 0.0)
    round_s = target * (1 - 1e-6) - t_bh[plan.association] / g
    time_s = np.where(round_s - compute > 0, round_s - compute, 0.5 * np.maximum(round_s, 1e-3))
    counts = np.bincount(plan.association, minlength=scenario.n_edges)
    share = edges.bandwidth_hz / np.maximum(counts, 1)
    am = build_association(scenario, np.maximum(bits, 1.0), time_s, energy_bandwidth_hz=share, candidates=candidates,
                           reserve="priced")
    info["association_solves"] = info.get("association_solves", 0) + 1
    if am.precheck_message:
        return None
    res = solve_milp(am, inner.milp_solver, time_limit=inner.milp_time_limit, mip_gap=inner.milp_gap,
                     warm_start={"association": plan.association})
    if not res.ok or not res.decision:
        return None
    proposal = res.decision["association"]
    moved = np.flatnonzero((proposal >= 0) & (proposal != plan.association))
    if not moved.size:
        return None
    tried = []
    whole = move(scenario, plan, moved, proposal[moved], inner, budget)
    found = None if whole is None else score(scenario, whole, target, model.w_U, value)
    if found is not None and found[0] < best * (1 - model.tolerance) - 1e-12:
        info["moves"] = info.get("moves", 0) + len(moved)
        return whole, found[0]
    energy = am.data["energy"]
    saving = energy[moved, plan.association[moved]] - energy[moved, proposal[moved]]
    current, current_score = plan, best
    for u in moved[np.argsort(-np.nan_to_num(saving, nan=-np.inf, posinf=np.inf), kind="stable")][:SINGLE_MOVES]:
        trial = move(scenario, current, u, proposal[u], inner, budget)
        tried.append(int(u))
        found = None if trial is None else score(scenario, trial, target, model.w_U, value)
        if found is not None and found[0] < current_score * (1 - model.tolerance) - 1e-12:
            current, current_score = trial, found[0]
            info["moves"] = info.get("moves", 0) + 1
    return (current, current_score) if current is not plan else None


def alternate(model: JointModel, **options) -> Result:
    """Full F4 on ``model`` (module docstring); ``options`` as :func:`.decomposition.optimise_energy` takes them."""
    t0 = time.perf_counter()
    scenario, target = model.scenario, model.target_latency_s
    first = optimise_energy(model, **options)
    milp_solver = options.get("milp_solver")
    inner = Inner(exact=bool(options.get("exact", False)), local_search=options.get("local_search", True),
                  local_search_max_n=options.get("local_search_max_n", 12),
                  milp=None if milp_solver is None else {"solver": milp_solver,
                                                         "time_limit": options.get("milp_time_limit", 60.0),
                                                         "mip_gap": options.get("milp_gap", 1e-2)},
                  exact_cluster_limit=options.get("exact_cluster_limit", 200), milp_solver=milp_solver or "highs",
                  milp_time_limit=options.get("milp_time_limit", 60.0), milp_gap=options.get("milp_gap", 1e-2))
    value = module_value(scenario)
    candidates = candidate_edges(scenario, model.assoc_candidates)
    assoc_free = model.association == "optimise" and bool((candidates.sum(axis=1) > 1).any())
    place_free = model.coverage == "cluster" or model.edge_tiers
    info: dict = {}
    start_score = None if first.plan is None else score(scenario, first.plan, target, model.w_U, value)
    if first.status == Status.INFEASIBLE or start_score is None or not (assoc_free or place_free):
        return _with(first, {"iterations": 0, "association_free": assoc_free, "placement_free": place_free})
    plan, best = first.plan, start_score[0]
    iterations, accepted = 0, 0
    for _ in range(model.max_iterations):
        iterations += 1
        improved = False
        if place_free:
            for cand in placement_step(model, plan, inner, info):
                found = score(scenario, cand, target, model.w_U, value)
                if found is not None and found[0] < best * (1 - model.tolerance) - 1e-12:
                    plan, best, improved = cand, found[0], True
        if assoc_free:
            found = association_step(model, plan, inner, candidates, best, info, value)
            if found is not None:
                plan, best, improved = found[0], found[1], True
        accepted += improved
        if not improved:
            break
    if accepted == 0:
        return _with(first, {"iterations": iterations, "association_free": assoc_free, "placement_free": place_free}
                     | info)
    final = plan.replace(scheduler=first.plan.scheduler)
    metrics = evaluate(scenario, final)
    bound = None
    if not assoc_free and model.coverage == "full":
        cheap = final.replace(tier=np.where(edge_allowed(scenario, model.edge_tiers)[None, :], EDGE, final.tier))
        bound = float(cluster_bounds(scenario, cheap, final.e_agg * target).sum()) / final.e_agg
        bound = min(bound, metrics.energy_j)
    stats = dict(first.stats) | info | {"iterations": iterations, "accepted_iterations": accepted,
                                        "association_free": assoc_free, "placement_free": place_free,
                                        "utility": float((value * final.train).sum()), "score": best,
                                        "start_energy_j": first.objective}
    return Result(status=Status.FEASIBLE, objective=metrics.energy_j, bound=bound,
                  fixed_objective=fixed_energy(scenario, final), backend=first.backend, backend_version=__version__,
                  build_s=model.build_s, runtime_s=time.perf_counter() - t0, plan=final, metrics=metrics, stats=stats,
                  message=f"F4 alternation: {accepted} of {iterations} iterations improved on the structures-only solve"
                  + ("" if bound is not None else "; no bound is claimed over free associations or module subsets"))


def _with(res: Result, stats: dict) -> Result:
    """``res`` with ``stats`` added."""
    import dataclasses

    return dataclasses.replace(res, stats=dict(res.stats) | stats)
