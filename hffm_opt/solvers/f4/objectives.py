"""F4's other objectives, built on its energy-at-target solve: least latency (optionally within an energy budget)
and a weighted sum of latency and energy. ``solve_at(target)`` is that solve (a :class:`Result` whose objective
is the energy per edge round and whose bound is proven); this module only chooses the targets.

- Least latency: with the target free, the clusters only share the period, so the least period is the largest
  over clusters of each cluster's least period over its structures (:func:`~.screening.least_period`: full power,
  full CPU speed, the band split evenly in time). Clusters small enough are enumerated (the floor is exact);
  the others take the best of the candidate structures, and their floor is the least budget at which the
  relaxation of :func:`~.bounds.cluster_lower_bound` is finite (bisection), a proven lower bound. The plan is the
  least-energy plan at that latency (a relative margin above it, :data:`MARGINS`, for the inner solvers'
  tolerances). The Result's objective and bound are latencies per edge round (s).
- With the full-F4 options each target's solve is the alternation, from the faster of the start and its fastest
  placement, and the floor is proven over every placement and tier (:mod:`.free_floor`; the caller passes it).
- With an energy budget: the least target whose least energy fits the budget, by bisection on the target
  (energy never rises with the target); a target whose proven energy bound exceeds the budget is proven too
  fast, so the bound is the largest such target (or the latency floor).
- Weighted: targets on a grid from the least latency up to where latency alone costs more than the best point
  found, then golden-section refinement around the best; the bound is the least over the grid's intervals
  [T_i, T_i+1] of ``w_latency T_i + w_energy (energy bound at T_i+1)``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from ..._version import __version__
from ...evaluate import evaluate
from ...formulations.cluster import cluster_data
from ...formulations.joint import JointModel
from ...network.scenario import Scenario
from ...plan import Plan
from ..result import OPTIMAL_GAP, Result, Status, relative_gap
from .bounds import Units, cluster_lower_bound, lower_bound
from .screening import least_period
from .structures import cluster_exact_choices, cluster_structures, set_structure

MARGINS = (1.5e-6, 2e-6, 1e-5, 1e-4, 1e-3, 1e-2)  # relative margins above the least latency tried in turn
LATENCY_RTOL = 1e-3  # the energy-budget bisection stops when the bracket is this narrow (relative)
MAX_DOUBLINGS = 40  # the energy-budget search doubles the target at most this often
GRID = 6  # weighted: grid points
GOLDEN_STEPS = 8  # weighted: golden-section refinements
INFINITE_BUDGET_S = 1e12  # a period budget (s) beyond any plan's: the relaxation there bounds every target


@dataclass(frozen=True)
class LatencyFloor:
    """Least latency per edge round: ``upper`` reached by a structure per cluster (s), ``lower`` proven (s),
    ``certified`` True when every cluster was enumerated (then lower == upper)."""

    upper: float
    lower: float
    certified: bool


def period_floor(scenario: Scenario, direct: Plan, e: int, upper: float, units: Units | None = None) -> float:
    """Least period budget (s) at which cluster ``e``'s relaxation (``units`` as
    :func:`~.bounds.cluster_lower_bound` takes them) is finite (a proven least period)."""
    lo, hi = 0.0, upper * (1 + 1e-9)
    if not math.isfinite(cluster_lower_bound(scenario, direct, e, hi, units=units)):
        return upper
    while hi - lo > 1e-12 * hi:
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if math.isfinite(cluster_lower_bound(scenario, direct, e, mid, units=units)) else (mid, hi)
    return hi


def least_latency(scenario: Scenario, start: Plan, exact_cluster_limit: float) -> LatencyFloor:
    """The least latency per edge round of F4's problem from ``start`` (module docstring)."""
    direct = start.replace(aggregator=np.full(scenario.n_edges, -1), parent=np.full(scenario.n_devices, -1))
    upper, lower, certified = 0.0, 0.0, True
    for e in range(scenario.n_edges):
        members = np.flatnonzero(start.association == e)
        if len(members) == 0:
            continue
        enumerated = cluster_exact_choices(scenario, members) <= exact_cluster_limit
        t_ref = least_period(cluster_data(scenario, direct, e)) / (2 * start.e_agg)
        periods = [least_period(cluster_data(scenario, set_structure(start, scenario, e, members, s), e))
                   for s in cluster_structures(scenario, start, e, enumerated, t_ref)]
        best = min(periods)
        upper = max(upper, best)
        lower = max(lower, best if enumerated else period_floor(scenario, direct, e, best))
        certified &= enumerated
    return LatencyFloor(upper / start.e_agg, lower / start.e_agg, certified)


def _reached(solve_at, floor: LatencyFloor, start_s: float) -> Result:
    """The least-energy plan at the least latency: the first margin of :data:`MARGINS` the inner solvers meet, or
    first the start's own latency ``start_s`` (s) when it is below the first margin (the start meets it, so the
    solve does: the plan is never slower than the start)."""
    targets = [floor.upper * (1 + margin) for margin in MARGINS]
    if start_s < targets[0]:
        targets.insert(0, start_s)
    for target in targets:
        res = solve_at(target)
        if res.ok and res.status != Status.INFEASIBLE:
            return res
    return res


def _result(model: JointModel, res: Result, objective: float | None, bound: float | None, t0: float, kind: str,
            message: str, proven: bool, extra: dict | None = None) -> Result:
    """A Result of the objective ``kind`` around the energy solve ``res`` (its plan, metrics and energy figures)."""
    gap = relative_gap(objective, bound)
    status = res.status if not res.ok else (Status.OPTIMAL if proven and gap is not None and gap <= OPTIMAL_GAP
                                            else Status.FEASIBLE)
    stats = dict(res.stats) | {"objective_kind": kind, "energy_j": res.objective, "energy_bound_j": res.bound,
                               "energy_status": res.status.value} | (
        extra or {})
    return Result(status=status, objective=objective if res.ok else None, bound=bound, backend=res.backend,
                  backend_version=__version__, build_s=model.build_s, runtime_s=time.perf_counter() - t0,
                  plan=res.plan, metrics=res.metrics, stats=stats, message=message)


def minimise_latency(model: JointModel, solve_at, exact_cluster_limit: float, floor: LatencyFloor | None = None
                     ) -> Result:
    """Least latency per edge round (s) of ``model``, within its energy budget if any (module docstring); ``floor``
    default: :func:`least_latency` of the model's start."""
    t0 = time.perf_counter()
    floor = floor or least_latency(model.scenario, model.start, exact_cluster_limit)
    res = _reached(solve_at, floor, evaluate(model.scenario, model.start).latency_s)
    budget = model.energy_budget_j
    what = ("every cluster enumerated: the floor is the least latency" if floor.certified else
            "the floor of the clusters not enumerated is their relaxation's least period")
    if budget is None or (res.ok and res.objective <= budget):
        latency = res.metrics.latency_s if res.ok else None
        return _result(model, res, latency, floor.lower, t0, "latency_s", what, floor.certified,
                       {"latency_floor_s": floor.lower})
    if not model.alternates and lower_bound(model.scenario, model.start, INFINITE_BUDGET_S) > budget:
        return _infeasible(model, t0, f"energy_budget_j = {budget:.6g}: below the proven least energy per edge round "
                                      "at any latency")
    proven_lo = floor.lower if res.bound is None or res.bound <= budget else floor.upper
    lo, hi, best = floor.upper, floor.upper * 2, None
    for _ in range(MAX_DOUBLINGS):
        trial = solve_at(hi)
        if trial.ok and trial.objective <= budget:
            best = trial
            break
        if trial.bound is not None and trial.bound > budget:
            proven_lo = hi
        lo, hi = hi, hi * 2
    if best is None:
        return _infeasible(model, t0, f"energy_budget_j = {budget:.6g}: no target up to {lo:.6g} s per edge round "
                                      "fits it", certified=False)
    while hi / lo - 1 > LATENCY_RTOL:
        mid = math.sqrt(lo * hi)
        trial = solve_at(mid)
        if trial.ok and trial.objective <= budget:
            hi, best = mid, trial
        else:
            if trial.bound is not None and trial.bound > budget:
                proven_lo = max(proven_lo, mid)
            lo = mid
    return _result(model, best, best.metrics.latency_s, proven_lo, t0, "latency_s",
                   f"least target within {budget:.6g} J per edge round, by bisection to {LATENCY_RTOL:g}; the bound is "
                   "the largest target proven over budget", True, {"latency_floor_s": floor.lower})


def _infeasible(model: JointModel, t0: float, message: str, certified: bool = True) -> Result:
    return Result(status=Status.INFEASIBLE if certified else Status.ERROR, backend="f4:fast",
                  backend_version=__version__, build_s=model.build_s, runtime_s=time.perf_counter() - t0,
                  stats={"objective_kind": "latency_s"}, message=f"infeasible: {message}")


def _weighted(model: JointModel, res: Result) -> float:
    return model.w_latency * res.metrics.latency_s + model.w_energy * res.objective


def minimise_weighted(model: JointModel, solve_at, exact_cluster_limit: float, floor: LatencyFloor | None = None
                      ) -> Result:
    """Least ``w_latency * latency_s + w_energy * energy_j`` per edge round (module docstring); ``floor`` as
    :func:`minimise_latency` takes it."""
    t0 = time.perf_counter()
    floor = floor or least_latency(model.scenario, model.start, exact_cluster_limit)
    first = _reached(solve_at, floor, evaluate(model.scenario, model.start).latency_s)
    if not first.ok:
        return _result(model, first, None, None, t0, "weighted", first.message, False)
    w_l, w_e = model.w_latency, model.w_energy
    # the least energy at any latency: the start's relaxation, or 0 when placement, tiers or association are free
    e_inf = 0.0 if model.alternates else lower_bound(model.scenario, model.start, INFINITE_BUDGET_S)
    far = (_weighted(model, first) - w_e * e_inf) / w_l  # beyond this target latency alone costs more
    solved = {first.stats["target_latency_s"]: first}
    if far > floor.upper * (1 + 1e-6):
        for target in np.linspace(far, floor.upper, GRID + 1)[:-1]:  # from the far end: energies only rise
            solved[float(target)] = solve_at(float(target))
        grid = sorted(solved)
        i = min(range(len(grid)), key=lambda k: _weighted(model, solved[grid[k]]) if solved[grid[k]].ok else math.inf)
        lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
        ratio = (math.sqrt(5) - 1) / 2
        for _ in range(GOLDEN_STEPS):
            a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
            for target in (a, b):
                if target not in solved:
                    solved[target] = solve_at(target)
            fa, fb = (_weighted(model, solved[t]) if solved[t].ok else math.inf for t in (a, b))
            lo, hi = (lo, b) if fa <= fb else (a, hi)
    ok = {t: r for t, r in solved.items() if r.ok}
    best = min(ok.values(), key=lambda r: _weighted(model, r))
    targets = sorted(ok)
    bounds = [ok[t].bound for t in targets]
    intervals = [w_l * floor.lower + w_e * (bounds[0] if bounds[0] is not None else e_inf)]
    for k, t in enumerate(targets):
        following = bounds[k + 1] if k + 1 < len(targets) else None
        intervals.append(w_l * t + w_e * (following if following is not None else e_inf))
    return _result(model, best, _weighted(model, best), min(intervals), t0, "weighted",
                   f"{len(solved)} targets solved; the bound is the least over their intervals of w_latency x the "
                   "interval's start + w_energy x the proven energy bound at its end", floor.certified,
                   {"w_latency": w_l, "w_energy": w_e})
