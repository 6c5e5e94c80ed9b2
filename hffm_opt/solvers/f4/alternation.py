"""Full F4: the alternation F1 (placement and tiers) -> association -> F2/structures + F3 -> evaluate (section 4).

The energy-at-target F4 of :mod:`.decomposition` optimises the relay structures and the continuous decisions
with the start's module assignment, tiers and association. When the model leaves those free
(:attr:`~hffm_opt.formulations.joint.JointModel.alternates`), :func:`alternate` starts from that solve, then

0. **enumeration step**: every cluster with at most ``CLUSTER_CHOICES_LIMIT`` choices (module sets x structures x
   aggregator/edge tier splits, :func:`.enumeration.cluster_choice_count`) gets its best module sets, tiers,
   structure and continuous decisions by enumeration (:func:`.enumeration.best_cluster_choice`, exactly what the
   exact mode prices); given the association, such a cluster is at its optimum;

and repeats

1. **F1** (:func:`placement_step`): the placement MILP over the clusters not enumerated, priced at the incumbent's
   structures and continuous decisions (:func:`~hffm_opt.formulations.placement.build_f4_placement`, exactly the
   evaluator's accounting); a module that may stay in its cluster goes to the edge or, in a D2D cluster, the
   aggregator tier; its decision is written into the plan, priced by ``evaluate`` (which must agree with the
   program's figures), then the clusters whose placement changed get the cluster step again (a cluster that turns
   direct there sends its aggregator-tier modules to the edge);
2. **association** (:func:`association_step`): the association MILP over each device's ``assoc_candidates``
   nearest edges (reserving the bandwidth it prices at) proposes moves; all of them together, else the single
   moves in the order of the program's estimated saving and, when there are few (``MOVE_SEARCH_LIMIT``), every
   (device, candidate edge) move; each followed by the cluster step of the two clusters it changes (enumeration
   where the cluster is small, else structures + F3), so a move is judged after the placement it calls for;

accepting a candidate only when ``evaluate``'s objective (energy per edge round less ``w_U`` x utility) falls by
more than ``tolerance`` (relative), the latency per edge round still meets the target and the coverage rule holds.
It stops when an iteration accepts nothing or after ``max_iterations``: the result is never worse than the start's
F4 solve, which is never worse than the start. ``stats``: ``iterations``, ``clusters_enumerated`` (cluster steps
by enumeration), ``enumeration_priced`` (inner problems they priced), ``aggregator_tier_modules``, ...

Status and bound: ``optimal`` when the association is fixed (or no device has a second candidate) and every cluster
was enumerated with every inner problem certified (the score is then optimal; the bound, the energy itself, is
claimed only with ``w_U = 0``, where the score is the energy). Otherwise, with coverage ``"full"``: with the
association fixed, the relaxation of :func:`~.bounds.cluster_bounds` with every module that may stay in its cluster
at the aggregator tier (no upload nor edge downlink for it, its last-round broadcast left out: it bounds every tier
choice); with the association free, :func:`~.association_bound.association_bound` over every device's candidate
edges (and its own), whose least fixed energy over associations is then the result's fixed part. With coverage
``"cluster"`` (module subsets free) and ``w_U = 0``, :func:`~.subset_bound.subset_bound` (each (device, module)
pair priced alone, the modules covered, the compute spread at its floor; over every association within the
candidates when it is free); with ``w_U > 0`` none is claimed (status ``feasible``). The bound holds also when no
iteration improved on the start's solve (that solve's own bound is only for the start's association and tiers).

With module subsets free, F1 prices compute at the incumbent's CPU speeds (linear), blind to its cubic growth in a
device's load; each placement step therefore also tries the balanced assignment of :mod:`.balance`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..._version import __version__
from ...evaluate import evaluate
from ...formulations.association import build_association
from ...formulations.joint import JointModel, candidate_edges, covers, edge_allowed
from ...formulations.placement import build_f4_placement, module_value
from ...network.channel import backhaul_time
from ...network.scenario import Scenario
from ...plan import AGG, CLOUD, Plan
from ..milp import solve_milp
from ..result import Result, Status
from .association_bound import association_bound
from .balance import balanced_train
from .bounds import cluster_bounds, fixed_energy
from .cluster import apply_allocation
from .decomposition import best_structure, cluster_costs, optimise_energy
from .enumeration import best_cluster_choice, cluster_choice_count, write_choice
from .structures import set_structure
from .subset_bound import able_modules, subset_bound

LATENCY_RTOL = 1e-9  # relative: a candidate slower than the target by more is refused
FIGURE_RTOL = 1e-6  # relative: F1's own figures and evaluate's must agree this closely, else the step is dropped
SINGLE_MOVES = 6  # association: single moves tried per iteration when the proposal as a whole does not improve
CLUSTER_CHOICES_LIMIT = 1_000  # a cluster whose module sets x structures x tier splits are at most this is enumerated
MOVE_SEARCH_LIMIT = 24  # association: with at most this many (device, other candidate edge) pairs, every one is tried


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
    enumerate_limit: float = CLUSTER_CHOICES_LIMIT


def meets_coverage(model: JointModel, plan: Plan) -> bool:
    """Whether ``plan`` keeps the coverage rule: with ``"full"`` every device trains every trainable module it
    needs; with ``"cluster"`` :func:`~hffm_opt.formulations.joint.covers` over the plan's clusters."""
    scenario = model.scenario
    if model.coverage == "full":
        return bool((plan.train == (scenario.need & scenario.module_arrays["trainable"][None, :])).all())
    return covers(scenario, np.arange(scenario.n_devices), plan.association, plan.train, model.min_trainers)


def score(model: JointModel, plan: Plan, value: np.ndarray):
    """(objective, metrics) of ``plan``: energy per edge round less ``w_U`` x utility; None when it misses the
    target or the coverage rule, or cannot be priced."""
    if not meets_coverage(model, plan):
        return None
    try:
        m = evaluate(model.scenario, plan)
    except ValueError:
        return None
    if m.latency_s > model.target_latency_s * (1 + LATENCY_RTOL):
        return None
    return m.energy_j - model.w_U * float((value * plan.train).sum()), m


def enumerable(model: JointModel, plan: Plan, inner: Inner) -> np.ndarray:
    """(E,) bool: the non-empty clusters whose choices (module sets x structures x tier splits) are at most
    ``inner.enumerate_limit``: the cluster step enumerates them (:func:`.enumeration.best_cluster_choice`)."""
    scenario = model.scenario
    out = np.zeros(scenario.n_edges, bool)
    for e in range(scenario.n_edges):
        members = np.flatnonzero(plan.association == e)
        out[e] = len(members) > 0 and cluster_choice_count(scenario, model, members,
                                                           inner.enumerate_limit) <= inner.enumerate_limit
    return out


def reoptimise(model: JointModel, plan: Plan, edges, budget: float, inner: Inner, value: np.ndarray,
               info: dict) -> Plan | None:
    """The cluster step on ``edges``: a cluster with few choices (:func:`enumerable`) gets its best module sets,
    tiers, structure and continuous decisions by enumeration; the others their best structure and continuous
    decisions (:func:`.decomposition.best_structure`) with the plan's module sets and tiers. None when a cluster
    cannot meet the period ``budget``."""
    scenario = model.scenario
    small = enumerable(model, plan, inner)
    allocations = {}
    for e in sorted(set(int(e) for e in edges)):
        members = np.flatnonzero(plan.association == e)
        if not len(members):
            continue
        if small[e]:
            choice = best_cluster_choice(scenario, model, plan, e, budget, value)
            info["clusters_enumerated"] = info.get("clusters_enumerated", 0) + 1
            info["enumeration_priced"] = info.get("enumeration_priced", 0) + (0 if choice is None else choice.priced)
            if choice is None or not choice.certified:
                info["enumeration_uncertified"] = info.get("enumeration_uncertified", 0) + 1
            if choice is None:
                return None
            plan = write_choice(scenario, plan, e, choice)
            continue
        structure, alloc, *_ = best_structure(scenario, plan, budget, inner.exact,
                                              inner.local_search and not inner.exact, inner.local_search_max_n,
                                              inner.milp, inner.exact_cluster_limit, None, e)
        if alloc is None:
            return None
        plan = set_structure(plan, scenario, e, members, structure)
        allocations[e] = (members, alloc)
    return apply_allocation(plan, allocations)


def placement_step(model: JointModel, plan: Plan, inner: Inner, info: dict, value: np.ndarray) -> list[Plan]:
    """F1 on ``plan``'s structures and continuous decisions over the clusters the cluster step does not enumerate,
    then the cluster step where the placement changed: the candidate plans (empty when there is no such cluster,
    or F1 changes nothing or fails)."""
    scenario, budget = model.scenario, plan.e_agg * model.target_latency_s
    edges = np.flatnonzero(~enumerable(model, plan, inner) & (np.bincount(plan.association,
                                                                          minlength=scenario.n_edges) > 0))
    if not edges.size:
        return []
    balanced = _balanced(model, plan, edges, budget, inner, value, info)
    d = _placement(model, plan, edges, budget, inner, info)
    if d is None:
        return balanced
    trial = plan.replace(train=d["train"], tier=d["tier"])
    rows = np.bincount(plan.association, weights=(trial.train != plan.train).any(axis=1), minlength=scenario.n_edges)
    changed = np.flatnonzero((trial.tier != plan.tier).any(axis=1) | (rows > 0))
    if not changed.size:
        return balanced
    periods, energies = cluster_costs(scenario, trial)
    priced = np.isfinite(d["period_s"])
    agree = (np.allclose(periods[priced], d["period_s"][priced], rtol=FIGURE_RTOL, atol=1e-9)
             and np.allclose(energies[priced], d["energy_j"][priced], rtol=FIGURE_RTOL, atol=1e-9))
    info["f1_agrees"] = info.get("f1_agrees", True) and agree
    if not agree:  # never trust a program whose figures the evaluator does not reproduce
        return balanced
    again = reoptimise(model, trial, changed, budget, inner, value, info)
    return balanced + [trial] + ([again] if again is not None else [])


def _placement(model: JointModel, plan: Plan, edges: np.ndarray, budget: float, inner: Inner, info: dict
               ) -> dict | None:
    """F1's decision over the clusters ``edges``, one program per cluster (its objective and rows separate by
    cluster, so this is F1 over them all, and each small program solves to its gap well within the time limit
    instead of one large program stopping at it: the same plan on a loaded machine), merged as
    :func:`~hffm_opt.formulations.placement.build_f4_placement` decodes it; a cluster whose program fails keeps
    ``plan``'s decisions. None when every program fails."""
    scenario = model.scenario
    train, tier = plan.train.copy(), plan.tier.copy()
    period, energy = np.full(scenario.n_edges, np.nan), np.full(scenario.n_edges, np.nan)
    for e in edges:
        f1 = build_f4_placement(scenario, plan, budget, edges=[e], coverage=model.coverage,
                                min_trainers=model.min_trainers, w_U=model.w_U,
                                edge_ok=edge_allowed(scenario, model.edge_tiers))
        res = solve_milp(f1, inner.milp_solver, time_limit=inner.milp_time_limit, mip_gap=min(inner.milp_gap, 1e-4))
        info["f1_solves"] = info.get("f1_solves", 0) + 1
        if not res.ok or not res.decision:
            info["f1_failures"] = info.get("f1_failures", 0) + 1
            continue
        members = plan.association == e
        train[members], tier[e] = res.decision["train"][members], res.decision["tier"][e]
        period[e], energy[e] = res.decision["period_s"][e], res.decision["energy_j"][e]
    return None if np.isnan(period).all() else {"train": train, "tier": tier, "period_s": period, "energy_j": energy}


def _balanced(model: JointModel, plan: Plan, edges: np.ndarray, budget: float, inner: Inner, value: np.ndarray,
              info: dict) -> list[Plan]:
    """With module subsets free, the clusters ``edges`` with a balanced module assignment
    (:func:`.balance.balanced_train`) and the cluster step run on them: [that plan], or [] when it is the same
    assignment or cannot meet the budget."""
    if model.coverage != "cluster":
        return []
    scenario, able, train = model.scenario, able_modules(model.scenario), plan.train.copy()
    for e in edges:
        members = np.flatnonzero(plan.association == e)
        train[members] = balanced_train(scenario, plan, members, able[members], model.min_trainers)
    if (train == plan.train).all():
        return []
    info["balanced_tried"] = info.get("balanced_tried", 0) + 1
    found = reoptimise(model, _reset(plan.replace(train=train), scenario, edges), edges, budget, inner, value, info)
    return [] if found is None else [found]


def _reset(plan: Plan, scenario: Scenario, edges) -> Plan:
    """``plan`` with the clusters ``edges`` uploading straight to their edge (no D2D structure, no aggregator tier:
    :func:`.structures.set_structure`)."""
    for e in edges:
        plan = set_structure(plan, scenario, e, np.flatnonzero(plan.association == e), None)
    return plan


def move(model: JointModel, plan: Plan, devices, to, inner: Inner, budget: float, value: np.ndarray,
         info: dict) -> Plan | None:
    """``plan`` with ``devices`` associated with edges ``to``, the changed clusters' structures reset and the
    cluster step run on them (None when a changed cluster cannot meet the budget)."""
    devices, to = np.atleast_1d(devices), np.atleast_1d(to)
    affected = set(plan.association[devices].tolist()) | set(to.tolist())
    plan = _reset(plan, model.scenario, affected)
    assoc = plan.association.copy()
    assoc[devices] = to
    return reoptimise(model, plan.replace(association=assoc), affected, budget, inner, value, info)


def association_step(model: JointModel, plan: Plan, inner: Inner, candidates: np.ndarray, best: float,
                     info: dict, value: np.ndarray):
    """The association MILP's proposal, all moves at once, else single moves (the proposal's, in the order of its
    estimated saving, then, when there are at most :data:`MOVE_SEARCH_LIMIT` (device, other candidate edge)
    pairs, every one): (plan, score) of the best candidate that improves on ``best``, or None."""
    scenario, target = model.scenario, model.target_latency_s
    g, budget = plan.e_agg, plan.e_agg * model.target_latency_s
    dev, mods, edges = scenario.devices, scenario.module_arrays, scenario.edges
    bits = plan.train @ mods["update_bits"]
    compute = plan.round_cycles(scenario) / dev.cpu_hz
    cloud_bits = np.array([((plan.train[plan.association == e].any(axis=0)) & (plan.tier[e] == CLOUD))
                           @ mods["update_bits"] for e in range(scenario.n_edges)])
    t_bh = backhaul_time(cloud_bits, edges.backhaul_delay_s, edges.backhaul_rate_bps)
    round_s = target * (1 - 1e-6) - t_bh[plan.association] / g
    time_s = np.where(round_s - compute > 0, round_s - compute, 0.5 * np.maximum(round_s, 1e-3))
    counts = np.bincount(plan.association, minlength=scenario.n_edges)
    share = edges.bandwidth_hz / np.maximum(counts, 1)
    am = build_association(scenario, np.maximum(bits, 1.0), time_s, energy_bandwidth_hz=share, candidates=candidates,
                           reserve="priced")
    info["association_solves"] = info.get("association_solves", 0) + 1
    singles: list[tuple[int, int]] = []
    if not am.precheck_message:
        res = solve_milp(am, inner.milp_solver, time_limit=inner.milp_time_limit, mip_gap=inner.milp_gap,
                         warm_start={"association": plan.association})
        if res.ok and res.decision:
            proposal = res.decision["association"]
            moved = np.flatnonzero((proposal >= 0) & (proposal != plan.association))
            if moved.size:
                whole = move(model, plan, moved, proposal[moved], inner, budget, value, info)
                found = None if whole is None else score(model, whole, value)
                if found is not None and found[0] < best * (1 - model.tolerance) - 1e-12:
                    info["moves"] = info.get("moves", 0) + len(moved)
                    return whole, found[0]
                energy = am.data["energy"]
                saving = energy[moved, plan.association[moved]] - energy[moved, proposal[moved]]
                order = np.argsort(-np.nan_to_num(saving, nan=-np.inf, posinf=np.inf), kind="stable")
                singles = [(int(u), int(proposal[u])) for u in moved[order][:SINGLE_MOVES]]
    others = candidates & (np.arange(scenario.n_edges)[None, :] != plan.association[:, None])
    if others.sum() <= MOVE_SEARCH_LIMIT:
        singles += [(int(u), int(e)) for u, e in zip(*np.nonzero(others)) if (u, e) not in singles]
    current, current_score = plan, best
    for u, e in singles:
        if current.association[u] == e:
            continue
        trial = move(model, current, u, e, inner, budget, value, info)
        info["single_moves_tried"] = info.get("single_moves_tried", 0) + 1
        found = None if trial is None else score(model, trial, value)
        if found is not None and found[0] < current_score * (1 - model.tolerance) - 1e-12:
            current, current_score = trial, found[0]
            info["moves"] = info.get("moves", 0) + 1
    return (current, current_score) if current is not plan else None


def alternate(model: JointModel, **options) -> Result:
    """Full F4 on ``model`` (module docstring); ``options`` as :func:`.decomposition.optimise_energy` takes them,
    and ``cluster_choices_limit`` (default :data:`CLUSTER_CHOICES_LIMIT`) for the cluster step's enumeration."""
    t0 = time.perf_counter()
    scenario, target = model.scenario, model.target_latency_s
    limit = options.pop("cluster_choices_limit", CLUSTER_CHOICES_LIMIT)
    first = optimise_energy(model, **options)
    milp_solver = options.get("milp_solver")
    inner = Inner(exact=bool(options.get("exact", False)), local_search=options.get("local_search", True),
                  local_search_max_n=options.get("local_search_max_n", 12),
                  milp=None if milp_solver is None else {"solver": milp_solver,
                                                         "time_limit": options.get("milp_time_limit", 60.0),
                                                         "mip_gap": options.get("milp_gap", 1e-2)},
                  exact_cluster_limit=options.get("exact_cluster_limit", 200), milp_solver=milp_solver or "highs",
                  milp_time_limit=options.get("milp_time_limit", 60.0), milp_gap=options.get("milp_gap", 1e-2),
                  enumerate_limit=limit)
    value = module_value(scenario)
    candidates = candidate_edges(scenario, model.assoc_candidates)
    assoc_free = model.association == "optimise" and bool((candidates.sum(axis=1) > 1).any())
    place_free = model.coverage == "cluster" or model.edge_tiers or bool(scenario.module_arrays["cluster_local"].any())
    info: dict = {}
    start_score = None if first.plan is None else score(model, first.plan, value)
    if first.status == Status.INFEASIBLE or start_score is None or not (assoc_free or place_free):
        return _with(first, {"iterations": 0, "association_free": assoc_free, "placement_free": place_free})
    plan, best = first.plan, start_score[0]
    budget = plan.e_agg * target
    proven = None  # the score of a plan proven optimal (every cluster enumerated and certified, association fixed)
    small = enumerable(model, plan, inner)
    if place_free and small.any():  # the enumeration step: each small cluster at its best given the association
        before = (info.get("clusters_enumerated", 0), info.get("enumeration_uncertified", 0))
        cand = reoptimise(model, plan, np.flatnonzero(small), budget, inner, value, info)
        found = None if cand is None else score(model, cand, value)
        info["start_clusters_enumerated"] = info.get("clusters_enumerated", 0) - before[0]
        certified = info.get("enumeration_uncertified", 0) == before[1]
        if found is not None and found[0] <= best:
            plan, best = cand, found[0]
            if certified and not assoc_free and small[np.bincount(plan.association,
                                                                  minlength=scenario.n_edges) > 0].all():
                proven = best
    iterations, accepted = 0, 0
    for _ in range(model.max_iterations if proven is None else 0):
        iterations += 1
        improved = False
        if place_free:
            for cand in placement_step(model, plan, inner, info, value):
                found = score(model, cand, value)
                if found is not None and found[0] < best * (1 - model.tolerance) - 1e-12:
                    plan, best, improved = cand, found[0], True
        if assoc_free:
            found = association_step(model, plan, inner, candidates, best, info, value)
            if found is not None:
                plan, best, improved = found[0], found[1], True
        accepted += improved
        if not improved:
            break
    info |= {"iterations": iterations, "accepted_iterations": accepted, "association_free": assoc_free,
             "placement_free": place_free}
    final = plan.replace(scheduler=first.plan.scheduler)
    metrics = first.metrics if plan is first.plan else evaluate(scenario, final)
    bound, fixed, status = free_bound(model, final, metrics.energy_j, budget, proven, assoc_free, candidates)
    stats = dict(first.stats) | info | {"utility": float((value * final.train).sum()), "score": best,
                                        "start_energy_j": first.objective,
                                        "aggregator_tier_modules": int((final.tier == AGG).sum())}
    claim = ("every cluster enumerated: optimal" + ("" if bound is not None else " for the score (energy less w_U x "
                                                    "utility); no bound on the energy alone is claimed")
             if proven is not None else ("" if bound is not None else "no bound is claimed on the score"))
    return Result(status=status, objective=metrics.energy_j, bound=bound, fixed_objective=fixed, backend=first.backend,
                  backend_version=__version__, build_s=model.build_s, runtime_s=time.perf_counter() - t0, plan=final,
                  metrics=metrics, stats=stats,
                  message=f"F4 alternation: {accepted} of {iterations} iterations improved on the enumeration step"
                  + ("; " + claim if claim else ""))


def free_bound(model: JointModel, plan: Plan, energy: float, budget: float, proven: float | None, assoc_free: bool,
               candidates: np.ndarray) -> tuple[float | None, float, Status]:
    """(bound, fixed energy, status) of full F4's result ``plan`` (energy per edge round ``energy``, J) over what
    the model leaves free (module docstring)."""
    scenario = model.scenario
    fixed = fixed_energy(scenario, plan)
    if proven is not None:
        return (energy if model.w_U == 0 else None), fixed, Status.OPTIMAL
    allowed = None
    if assoc_free:
        allowed = candidates.copy()
        allowed[np.arange(scenario.n_devices), plan.association] = True
    if model.coverage != "full":
        if model.w_U > 0:  # the score is not the energy: no bound on it is claimed
            return None, fixed, Status.FEASIBLE
        bound, fixed = subset_bound(model, plan, budget, allowed)
    elif allowed is not None:
        bound, fixed = association_bound(scenario, plan, budget, allowed, model.edge_tiers)
    else:
        # every module that may stay in its cluster priced at the aggregator tier: no upload, no edge downlink for
        # it and the last-round broadcast left out, a relaxation of every tier choice
        cheap = plan.replace(tier=np.where(edge_allowed(scenario, model.edge_tiers)[None, :], AGG, plan.tier))
        bound = float(cluster_bounds(scenario, cheap, budget).sum()) / plan.e_agg
    return min(bound, energy), min(fixed, energy), Status.FEASIBLE


def _with(res: Result, stats: dict) -> Result:
    """``res`` with ``stats`` added."""
    import dataclasses

    return dataclasses.replace(res, stats=dict(res.stats) | stats)
