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

from ..errors import ConfigError, SchedulerError
from ..evaluate import evaluate
from ..formulations.joint import JointModel, build_joint, check_objective
from ..network.scenario import Scenario
from ..plan import Plan
from ..solvers import Result, solve
from .registry import register, schedule

START_SCHEDULERS = ("hierarchical", "hierarchical-d2d", "greedy")  # the heuristic plans F4 may start from
TARGET_FROM = ("fastest",) + START_SCHEDULERS


def joint_model(scenario: Scenario, *, e_agg: int = 2, seed: int = 0, target_latency_s: float | None = None,
                target_from: str = "hierarchical-d2d", objective: str = "energy", energy_budget_j: float | None = None,
                w_latency: float | None = None, w_energy: float | None = None, local_steps: int = 1,
                batch_size: int = 16) -> JointModel:
    """The F4 model: it starts from the fastest of :data:`START_SCHEDULERS`' plans (same ``e_agg`` and ``seed``).
    With the energy objective it aims at ``target_latency_s`` (s per edge round) or, if None, at the latency of the
    plan ``target_from`` (``"fastest"``: the fastest start): by default as fast as HF-FM+D2D, as cheap as possible.
    The other objectives take no target (module docstring); bad values raise :class:`SchedulerError`. Every plan is
    made for the training workload ``local_steps`` (tau) x ``batch_size`` samples per edge round."""
    if target_from not in TARGET_FROM:
        raise SchedulerError(f"target_from = {target_from!r}: must be one of {list(TARGET_FROM)}")
    if int(e_agg) != e_agg or e_agg < 1:
        raise SchedulerError(f"e_agg = {e_agg!r}: must be an integer >= 1")
    if target_latency_s is not None and not (0 < target_latency_s < float("inf")):
        raise SchedulerError(f"target_latency_s = {target_latency_s!r}: must be a finite latency > 0 s, or None")
    try:
        check_objective(objective, 1.0 if objective == "energy" and target_latency_s is None else target_latency_s,
                        energy_budget_j, w_latency, w_energy)
    except ConfigError as exc:
        raise SchedulerError(str(exc)) from None
    plans = {name: schedule(scenario, name, e_agg=int(e_agg), seed=seed, local_steps=local_steps,
                            batch_size=batch_size) for name in START_SCHEDULERS}
    latency = {name: evaluate(scenario, plan).latency_s for name, plan in plans.items()}
    fastest = min(latency, key=latency.get)
    if objective == "energy" and target_latency_s is None:
        target_latency_s = latency[fastest if target_from == "fastest" else target_from]
    return build_joint(scenario, plans[fastest], target_latency_s, fastest, objective=objective,
                       energy_budget_j=energy_budget_j, w_latency=w_latency, w_energy=w_energy)


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
            w_energy: float | None = None, local_steps: int = 1, batch_size: int = 16) -> Plan:
    """F4 for ``objective`` (module docstring): by default least energy per edge round within the latency target
    (default: hierarchical-d2d's latency).

    ``solver``: ``"highs"`` or ``"gurobi"`` (small clusters also get the F2 relay-tree MILP on that backend) or
    ``"fast"`` (no MILP)."""
    if solver not in ("highs", "gurobi", "fast"):
        raise SchedulerError(f"solver = {solver!r}: the optimal scheduler runs on 'highs', 'gurobi' or 'fast'")
    model = joint_model(scenario, e_agg=e_agg, seed=seed, target_latency_s=target_latency_s, target_from=target_from,
                        objective=objective, energy_budget_j=energy_budget_j, w_latency=w_latency, w_energy=w_energy,
                        local_steps=local_steps, batch_size=batch_size)
    return _planned(solve(model, solver), model, "optimal")


@register("optimal-exact")
@optimiser
def optimal_exact(scenario: Scenario, *, e_agg: int = 2, seed: int = 0, target_latency_s: float | None = None,
                  target_from: str = "hierarchical-d2d", objective: str = "energy",
                  energy_budget_j: float | None = None, w_latency: float | None = None,
                  w_energy: float | None = None, local_steps: int = 1, batch_size: int = 16) -> Plan:
    """The certified optimum of F4's problem for ``objective`` by enumeration (refuses large instances with the
    count)."""
    model = joint_model(scenario, e_agg=e_agg, seed=seed, target_latency_s=target_latency_s, target_from=target_from,
                        objective=objective, energy_budget_j=energy_budget_j, w_latency=w_latency, w_energy=w_energy,
                        local_steps=local_steps, batch_size=batch_size)
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
