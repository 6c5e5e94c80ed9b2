"""The optimising schedulers: ``optimal`` (F4), ``optimal-exact`` (enumeration) and ``local-search``.

Each builds the F4 model (:func:`joint_model`: a starting plan and a latency target per edge round) and runs it
through :func:`hffm_opt.solvers.solve`; the returned plan's ``meta`` holds the :meth:`Result.summary` (status,
objective = energy per edge round in J, proven bound and gap, times, backend, latency target, starting plan). When
no plan meets the target the status says ``infeasible`` and the plan keeps the starting plan's decisions where
nothing better was found.
"""

from __future__ import annotations

from ..errors import SchedulerError
from ..evaluate import evaluate
from ..formulations.joint import JointModel, build_joint
from ..network.scenario import Scenario
from ..plan import Plan
from ..solvers import Result, solve
from .registry import register, schedule

START_SCHEDULERS = ("hierarchical", "hierarchical-d2d", "greedy")  # the heuristic plans F4 may start from
TARGET_FROM = ("fastest",) + START_SCHEDULERS


def joint_model(scenario: Scenario, *, e_agg: int = 2, seed: int = 0, target_latency_s: float | None = None,
                target_from: str = "hierarchical-d2d") -> JointModel:
    """The F4 model: it starts from the fastest of :data:`START_SCHEDULERS`' plans (same ``e_agg`` and ``seed``)
    and aims at ``target_latency_s`` (s per edge round) or, if None, at the latency of the plan ``target_from``
    (``"fastest"``: the fastest start). By default: as fast as HF-FM+D2D, as cheap as possible."""
    if target_from not in TARGET_FROM:
        raise SchedulerError(f"target_from = {target_from!r}: must be one of {list(TARGET_FROM)}")
    if int(e_agg) != e_agg or e_agg < 1:
        raise SchedulerError(f"e_agg = {e_agg!r}: must be an integer >= 1")
    if target_latency_s is not None and not (0 < target_latency_s < float("inf")):
        raise SchedulerError(f"target_latency_s = {target_latency_s!r}: must be a finite latency > 0 s, or None")
    plans = {name: schedule(scenario, name, e_agg=int(e_agg), seed=seed) for name in START_SCHEDULERS}
    latency = {name: evaluate(scenario, plan).latency_s for name, plan in plans.items()}
    fastest = min(latency, key=latency.get)
    if target_latency_s is None:
        target_latency_s = latency[fastest if target_from == "fastest" else target_from]
    return build_joint(scenario, plans[fastest], target_latency_s, fastest)


def _planned(result: Result, model: JointModel, name: str) -> Plan:
    """The result's plan (or, without one, the starting plan) with the result's summary in its meta."""
    plan = result.plan if result.plan is not None else model.start.replace(scheduler=name)
    stats = {"target_latency_s": model.target_latency_s, "start": model.start_name}
    return plan.replace(meta=dict(plan.meta) | stats | result.summary())


@register("optimal")
def optimal(scenario: Scenario, *, e_agg: int = 2, seed: int = 0, target_latency_s: float | None = None,
            target_from: str = "hierarchical-d2d", solver: str = "highs") -> Plan:
    """F4: least energy per edge round within the latency target (default: hierarchical-d2d's latency).

    ``solver``: ``"highs"`` or ``"gurobi"`` (small clusters also get the F2 relay-tree MILP on that backend) or
    ``"fast"`` (no MILP)."""
    if solver not in ("highs", "gurobi", "fast"):
        raise SchedulerError(f"solver = {solver!r}: the optimal scheduler runs on 'highs', 'gurobi' or 'fast'")
    model = joint_model(scenario, e_agg=e_agg, seed=seed, target_latency_s=target_latency_s, target_from=target_from)
    return _planned(solve(model, solver), model, "optimal")


@register("optimal-exact")
def optimal_exact(scenario: Scenario, *, e_agg: int = 2, seed: int = 0, target_latency_s: float | None = None,
                  target_from: str = "hierarchical-d2d") -> Plan:
    """The certified optimum of F4's problem by enumeration (refuses large instances with the count)."""
    model = joint_model(scenario, e_agg=e_agg, seed=seed, target_latency_s=target_latency_s, target_from=target_from)
    result = solve(model, "exact")
    if result.status == "error":
        raise SchedulerError(f"scheduler 'optimal-exact': {result.message}")
    return _planned(result, model, "optimal-exact")


@register("local-search")
def local_search(scenario: Scenario, *, e_agg: int = 2, seed: int = 0, start: str = "greedy",
                 target_latency_s: float | None = None) -> Plan:
    """Local search with the convex inner step, from the plan of the scheduler ``start``, within the latency target
    (default: the start's own latency per edge round)."""
    first = schedule(scenario, start, e_agg=e_agg, seed=seed)
    target = evaluate(scenario, first).latency_s if target_latency_s is None else target_latency_s
    model = build_joint(scenario, first, target, start)
    return _planned(solve(model, "local-search"), model, "local-search")
