"""The optimising schedulers: ``optimal`` (F4), ``optimal-exact`` (enumeration) and ``local-search``.

Registered here with light wrappers so that importing the package does not import the solver stack; the
plan's ``meta`` records the objective (energy per edge round, J), the latency target (s), status and gap.
"""

from __future__ import annotations

from .plan import Plan
from .scenario import Scenario
from .schedulers import register, schedule


def _annotated(result, solver: str) -> Plan:
    meta = dict(result.plan.meta) | {"objective": result.objective, "status": result.status, "gap": result.gap,
                                     "bound": result.bound, "evaluated": result.evaluated, "solve_s": result.solve_s,
                                     "solver": solver}
    return result.plan.replace(meta=meta)


@register("optimal")
def optimal(scenario: Scenario, *, e_agg: int = 2, seed: int = 0, target_latency_s: float | None = None,
            target_from: str = "hierarchical-d2d", solver: str = "highs", **_) -> Plan:
    """F4: least energy per edge round within the latency target (default: hierarchical-d2d's latency).

    ``solver``: ``"highs"`` or ``"gurobi"`` (small clusters also get the F2 relay-tree MILP on that backend) or
    ``"fast"`` (no MILP)."""
    from .solvers.joint import optimise

    if solver not in ("highs", "gurobi", "fast"):
        raise ValueError(f"solver = {solver!r}: the optimal scheduler runs on 'highs', 'gurobi' or 'fast'")
    res = optimise(scenario, e_agg=e_agg, seed=seed, target_latency_s=target_latency_s, target_from=target_from,
                   milp_solver=None if solver == "fast" else solver)
    return _annotated(res, solver)


@register("optimal-exact")
def optimal_exact(scenario: Scenario, *, e_agg: int = 2, seed: int = 0, target_latency_s: float | None = None,
                  target_from: str = "hierarchical-d2d", **_) -> Plan:
    """The certified optimum of F4's problem by enumeration (refuses large instances with the count)."""
    from .solvers.joint import optimise

    return _annotated(optimise(scenario, e_agg=e_agg, seed=seed, target_latency_s=target_latency_s,
                               target_from=target_from, exact=True), "exact")


@register("local-search")
def local_search(scenario: Scenario, *, e_agg: int = 2, seed: int = 0, start: str = "greedy",
                 target_latency_s: float | None = None, **_) -> Plan:
    """Local search with the convex inner step, from the plan of the scheduler ``start``."""
    from .solvers.joint import improve

    return _annotated(improve(scenario, schedule(scenario, start, e_agg=e_agg, seed=seed), target_latency_s), "fast")
