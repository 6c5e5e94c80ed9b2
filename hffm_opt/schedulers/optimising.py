"""The optimising schedulers: ``optimal`` (F4), ``optimal-exact`` (enumeration) and ``local-search``.

Each builds the F4 model (:func:`joint_model`: a starting plan, an objective and, for the energy objective, a
latency target per edge round) and runs it through :func:`hffm_opt.solvers.solve`; the returned plan's ``meta``
holds the :meth:`Result.summary` (status, objective, proven bound and gap, times, backend, latency target,
starting plan). The objective of ``optimal`` and ``optimal-exact``:

- ``objective="energy"`` (default): least energy per edge round (J) within the latency target
  (``target_latency_s``, else the latency of ``target_from``'s plan);
- ``objective="latency"``: least latency per edge round (s), within ``energy_budget_j`` (J per edge round) if given;
- ``objective="weighted"``: least ``w_latency * latency_s + w_energy * energy_j`` (both weights required, > 0).

The meta's ``objective``/``bound``/``gap`` are in the objective's unit (``objective_kind``: ``latency_s`` or
``weighted``; energy otherwise), and ``energy_j`` is the plan's energy. When no plan meets the target (or budget)
the status says ``infeasible`` and the plan keeps the starting plan's decisions where nothing better was found.
:data:`OPTIMISERS` names the schedulers that solve F4 to a proven bound (not heuristics: ``hffm-opt pareto`` leaves
them out of its heuristics); a scheduler function carries ``is_optimiser = True`` likewise.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import ConfigError, SchedulerError
from ..evaluate import evaluate
from ..formulations.joint import JointModel, build_joint, check_full_options, check_objective
from ..network.scenario import Scenario
from ..plan import Plan
from ..solvers import Result, solve
from .registry import register, schedule

START_SCHEDULERS = ("hierarchical", "hierarchical-d2d", "greedy")  # the heuristic plans F4 may start from
TARGET_FROM = ("fastest",) + START_SCHEDULERS


def joint_model(scenario: Scenario, *, e_agg: int = 2, seed: int = 0, target_latency_s: float | None = None,
                target_from: str = "hierarchical-d2d", objective: str = "energy", energy_budget_j: float | None = None,
                w_latency: float | None = None, w_energy: float | None = None, local_steps: int = 1,
                batch_size: int = 16, match_rounds: bool = False, **full) -> JointModel:
    """The F4 model: it starts from the fastest of :data:`START_SCHEDULERS`' plans (same ``e_agg`` and ``seed``).
    With the energy objective it aims at ``target_latency_s`` (s per edge round) or, if None, at the latency of the
    plan ``target_from`` (``"fastest"``: the fastest start): by default as fast as HF-FM+D2D, as cheap as possible.
    The other objectives take no target (module docstring); bad values raise :class:`SchedulerError`. Every plan is
    made for the training workload ``local_steps`` (tau) x ``batch_size`` samples per edge round. ``full``: the
    options of :func:`~hffm_opt.formulations.joint.check_full_options` (placement, tiers, association).
    ``match_rounds`` (energy objective, plain F4): every edge round, not only the period, ends no later than in the
    plan ``target_from`` (each edge round but the last capped at ``min_r end_r / r`` of that plan's round ends),
    so a training run on the plan is never behind that plan's at any edge round."""
    if target_from not in TARGET_FROM:
        raise SchedulerError(f"target_from = {target_from!r}: must be one of {list(TARGET_FROM)}")
    if not isinstance(match_rounds, (bool, np.bool_)):
        raise SchedulerError(f"match_rounds = {match_rounds!r}: must be true or false")
    if int(e_agg) != e_agg or e_agg < 1:
        raise SchedulerError(f"e_agg = {e_agg!r}: must be an integer >= 1")
    if target_latency_s is not None and not (0 < target_latency_s < float("inf")):
        raise SchedulerError(f"target_latency_s = {target_latency_s!r}: must be a finite latency > 0 s, or None")
    try:
        check_objective(objective, 1.0 if objective == "energy" and target_latency_s is None else target_latency_s,
                        energy_budget_j, w_latency, w_energy)
        check_full_options(**full)
    except ConfigError as exc:
        raise SchedulerError(str(exc)) from None
    if objective != "energy" and full.get("w_U", 0.0) > 0:
        raise SchedulerError(f"w_U = {full['w_U']!r}: only with the energy objective (objective = {objective!r} "
                             "compares latency and energy alone)")
    plans = {name: schedule(scenario, name, e_agg=int(e_agg), seed=seed, local_steps=local_steps,
                            batch_size=batch_size) for name in START_SCHEDULERS}
    metrics = {name: evaluate(scenario, plan) for name, plan in plans.items()}
    fastest = min(metrics, key=lambda name: metrics[name].latency_s)
    reference = metrics[fastest if target_from == "fastest" else target_from]
    if objective == "energy" and target_latency_s is None:
        target_latency_s = reference.latency_s
    ends = reference.round_end_s
    round_cap_s = float(np.min(ends / np.arange(1, len(ends) + 1))) if match_rounds else math.inf
    try:
        return build_joint(scenario, plans[fastest], target_latency_s, fastest, objective=objective,
                           energy_budget_j=energy_budget_j, w_latency=w_latency, w_energy=w_energy,
                           round_cap_s=round_cap_s, **full)
    except ConfigError as exc:
        raise SchedulerError(f"match_rounds = {match_rounds!r}: {exc}") from None


def optimiser(fn):
    """Mark a scheduler as an optimiser (``fn.is_optimiser = True``): one that solves F4 to a proven bound."""
    fn.is_optimiser = True
    return fn


def _planned(result: Result, model: JointModel, name: str) -> Plan:
    """The result's plan (or, without one, the starting plan) with the result's summary in its meta."""
    plan = result.plan if result.plan is not None else model.start.replace(scheduler=name)
    stats = {"target_latency_s": model.target_latency_s, "start": model.start_name, "objective_kind": "energy_j"}
    return plan.replace(meta=dict(plan.meta) | stats | result.summary())


@register("optimal")
@optimiser
def optimal(scenario: Scenario, *, e_agg: int = 2, seed: int = 0, target_latency_s: float | None = None,
            target_from: str = "hierarchical-d2d", solver: str = "highs", objective: str = "energy",
            energy_budget_j: float | None = None, w_latency: float | None = None,
            w_energy: float | None = None, local_steps: int = 1, batch_size: int = 16, coverage: str = "full",
            min_trainers: int = 1, w_U: float = 0.0, edge_tiers: bool = False, association: str = "fixed",
            assoc_candidates: int = 3, max_iterations: int = 10, tolerance: float = 1e-6,
            e_aggs: tuple | None = None, match_rounds: bool = False) -> Plan:
    """F4 for ``objective`` (module docstring): by default least energy per edge round within the latency target
    (default: hierarchical-d2d's latency).

    ``solver``: ``"highs"`` or ``"gurobi"`` (small clusters also get the F2 relay-tree MILP on that backend; F1 and
    the association MILP run there) or ``"fast"`` (no F2 MILP; F1 and association on HiGHS).

    Full F4 (:mod:`hffm_opt.solvers.f4.alternation`; with the latency or weighted objective, at each target they
    solve, without a proven bound): ``coverage`` ``"full"`` (default: every trainable module a device needs is
    trained, as the baselines do, so comparisons are fair) or ``"cluster"`` (each module needed in a cluster
    trained by at least ``min_trainers`` of its devices; with ``w_U`` > 0, J per unit of utility, energy objective
    only, a module is dropped where the energy saved exceeds ``w_U`` x the utility lost);
    ``edge_tiers`` (default False: only cluster-local modules stay at the edge; True: any module may, saving its
    backhaul, but such a module is then averaged inside its cluster only and never leaves it, so the clusters'
    copies drift apart); ``association`` ``"fixed"`` (default: the start's association, which keeps the proven
    bound) or ``"optimise"`` (moves over each device's ``assoc_candidates`` nearest edges, accepted only when
    evaluate's objective improves within the target, so never worse than ``"fixed"``, but without a proven bound); ``max_iterations``/``tolerance`` of the alternation; ``e_aggs`` (tuple of edge rounds per
    period, None = only ``e_agg``): each is solved at the same target per edge round and the least energy per edge
    round (less ``w_U`` x utility) wins; ``match_rounds`` (energy objective, plain F4, one ``e_agg``): every edge
    round ends no later than in ``target_from``'s plan (:func:`joint_model`)."""
    if solver not in ("highs", "gurobi", "fast"):
        raise SchedulerError(f"solver = {solver!r}: the optimal scheduler runs on 'highs', 'gurobi' or 'fast'")
    full = {"coverage": coverage, "min_trainers": min_trainers, "w_U": w_U, "edge_tiers": edge_tiers,
            "association": association, "assoc_candidates": assoc_candidates, "max_iterations": max_iterations,
            "tolerance": tolerance}
    common = {"seed": seed, "target_from": target_from, "objective": objective, "energy_budget_j": energy_budget_j,
              "w_latency": w_latency, "w_energy": w_energy, "local_steps": local_steps, "batch_size": batch_size}
    if match_rounds and e_aggs is not None:
        raise SchedulerError(f"match_rounds = {match_rounds!r}: not with e_aggs = {e_aggs!r} (the rounds are matched "
                             "at one e_agg)")
    model = joint_model(scenario, e_agg=e_agg, target_latency_s=target_latency_s, match_rounds=match_rounds,
                        **common, **full)
    if e_aggs is None:
        return _planned(solve(model, solver), model, "optimal")
    return _best_e_agg(scenario, model, _e_aggs(e_aggs), solver, common, full)


def _e_aggs(e_aggs) -> tuple:
    if isinstance(e_aggs, (str, bytes)) or not hasattr(e_aggs, "__iter__") or not len(e_aggs) or any(
            isinstance(g, bool) or int(g) != g or g < 1 for g in e_aggs):
        raise SchedulerError(f"e_aggs = {e_aggs!r}: must be a non-empty tuple of integers >= 1, or None")
    return tuple(sorted({int(g) for g in e_aggs}))


def _best_e_agg(scenario: Scenario, model: JointModel, e_aggs: tuple, solver: str, common: dict, full: dict) -> Plan:
    """F4 at each of ``e_aggs`` with ``model``'s target per edge round: the plan of least energy per edge round
    (less w_U x utility) among those that meet it; its meta's ``e_aggs`` maps each to its energy (None: missed)."""
    if model.objective != "energy":
        raise SchedulerError(f"e_aggs = {e_aggs!r}: only with objective 'energy' (objective = {model.objective!r})")
    target, tried, best = model.target_latency_s, {}, None
    for g in e_aggs:
        at = model if g == model.e_agg else joint_model(scenario, e_agg=g, target_latency_s=target, **common, **full)
        plan = _planned(solve(at, solver), at, "optimal")
        metrics = evaluate(scenario, plan)
        ok = plan.meta.get("status") in ("optimal", "feasible") and metrics.latency_s <= target * (1 + 1e-9)
        score = plan.meta.get("score", metrics.energy_j) if ok else None
        tried[str(g)] = metrics.energy_j if ok else None
        if ok and (best is None or score < best[0]):
            best = (score, plan)
    if best is None:
        plan = _planned(solve(model, solver), model, "optimal")
        return plan.replace(meta=dict(plan.meta) | {"e_aggs": tried})
    return best[1].replace(meta=dict(best[1].meta) | {"e_aggs": tried})


@register("optimal-exact")
@optimiser
def optimal_exact(scenario: Scenario, *, e_agg: int = 2, seed: int = 0, target_latency_s: float | None = None,
                  target_from: str = "hierarchical-d2d", objective: str = "energy",
                  energy_budget_j: float | None = None, w_latency: float | None = None,
                  w_energy: float | None = None, local_steps: int = 1, batch_size: int = 16, coverage: str = "full",
                  min_trainers: int = 1, w_U: float = 0.0, edge_tiers: bool = False, association: str = "fixed",
                  assoc_candidates: int = 3) -> Plan:
    """The certified optimum of F4's problem for ``objective`` by enumeration (refuses large instances with the
    count). The full-F4 options are those of ``optimal``; with any of them freeing placement, tiers or association
    (energy objective only; the other objectives are refused then), every association over the candidates and every
    module assignment within the coverage is enumerated too (:mod:`hffm_opt.solvers.f4.enumeration`).
    ``association`` defaults to ``"fixed"`` here (the enumeration of associations multiplies the count): pass
    ``"optimise"`` to certify ``optimal``'s default."""
    model = joint_model(scenario, e_agg=e_agg, seed=seed, target_latency_s=target_latency_s, target_from=target_from,
                        objective=objective, energy_budget_j=energy_budget_j, w_latency=w_latency, w_energy=w_energy,
                        local_steps=local_steps, batch_size=batch_size, coverage=coverage, min_trainers=min_trainers,
                        w_U=w_U, edge_tiers=edge_tiers, association=association, assoc_candidates=assoc_candidates)
    result = solve(model, "exact")
    if result.status == "error":
        raise SchedulerError(f"scheduler 'optimal-exact': {result.message}")
    return _planned(result, model, "optimal-exact")


OPTIMISERS = ("optimal", "optimal-exact")


@register("local-search")
def local_search(scenario: Scenario, *, e_agg: int = 2, seed: int = 0, start: str = "greedy",
                 target_latency_s: float | None = None, local_steps: int = 1, batch_size: int = 16) -> Plan:
    """Local search with the convex inner step, from the plan of the scheduler ``start``, within the latency target
    (default: the start's own latency per edge round)."""
    first = schedule(scenario, start, e_agg=e_agg, seed=seed, local_steps=local_steps, batch_size=batch_size)
    target = evaluate(scenario, first).latency_s if target_latency_s is None else target_latency_s
    model = build_joint(scenario, first, target, start)
    return _planned(solve(model, "local-search"), model, "local-search")
