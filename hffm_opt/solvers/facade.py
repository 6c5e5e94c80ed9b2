"""One entry point for every program: ``solve(model, solver=..., time_limit=..., mip_gap=..., warm_start=...)``.

Which backend can run which model is a table (:data:`ACCEPTS`), not an ``if`` chain:

- a MILP (:class:`~hffm_opt.formulations.milp_model.MilpModel`: F1, F2, association): ``highs`` (default),
  ``gurobi``;
- an F3 convex program (:class:`~hffm_opt.formulations.convex_model.ConvexModel`): ``fast`` (default, the KKT
  solvers of :mod:`.fast_kkt`) or ``cvxpy:<SOLVER>`` (``cvxpy`` alone means CLARABEL);
- the F4 joint model (:class:`~hffm_opt.formulations.joint.JointModel`): ``highs`` (default) or ``gurobi`` (F4
  with F2 relay-tree MILPs on that backend as extra candidates in small clusters), ``fast`` (F4 without MILPs),
  ``exact`` (enumeration of every structure with the convex inner problem; refuses large instances with the count).

Every call returns a :class:`SolveResult`: a missing backend, an instance too large for a licence or for the
exact mode, and a point that fails its KKT check are ``error`` results whose message says why (and how to install
a missing backend); an infeasible instance is ``infeasible`` with the pre-check's finding (device or edge named)
and, on Gurobi, the irreducible infeasible subsystem. Times in seconds.
"""

from __future__ import annotations

import time

from .. import __version__
from ..formulations.convex_model import ConvexModel
from ..formulations.joint import JointModel
from ..formulations.milp_model import MilpModel
from .result import InstanceTooLarge, SolverUnavailable, SolveResult

ACCEPTS = {MilpModel: ("highs", "gurobi"), ConvexModel: ("fast", "cvxpy"), JointModel: ("highs", "gurobi", "fast", "exact")}
SOLVER_NAMES = ("highs", "gurobi", "cvxpy:<SOLVER>", "fast", "exact")


def solve(model, solver: str | None = None, time_limit: float = 60.0, mip_gap: float = 1e-2,
          warm_start: dict | None = None) -> SolveResult:
    """Solve ``model`` on ``solver`` (None: the model's first accepted backend, see :data:`ACCEPTS`).

    ``time_limit`` (s) and ``mip_gap`` (relative) bound MILP solves (the F2 MILPs of F4 included; CLARABEL also
    takes the time limit); ``warm_start`` is a MILP decision dict used as the MIP start. Raises ``ValueError``
    only for a solver name that does not exist or does not fit the model.
    """
    accepted = next((names for kind, names in ACCEPTS.items() if isinstance(model, kind)), None)
    if accepted is None:
        raise ValueError(f"model = {type(model).__name__}: must be one of {[k.__name__ for k in ACCEPTS]}")
    solver = accepted[0] if solver is None else solver
    family = solver.split(":", 1)[0]
    if family not in ("highs", "gurobi", "cvxpy", "fast", "exact") or (":" in solver and family != "cvxpy"):
        raise ValueError(f"solver = {solver!r}: must be one of {SOLVER_NAMES}")
    if family not in accepted:
        raise ValueError(f"solver = {solver!r}: a {type(model).__name__} is solved by {accepted}")
    try:
        if isinstance(model, MilpModel):
            from .milp import solve_milp

            return solve_milp(model, solver, time_limit=time_limit, mip_gap=mip_gap, warm_start=warm_start)
        if isinstance(model, ConvexModel):
            if family == "fast":
                from .fast_solve import solve_fast

                return solve_fast(model)
            from .convex import DEFAULT_SOLVER, solve_convex

            return solve_convex(model, solver.split(":", 1)[1] if ":" in solver else DEFAULT_SOLVER, time_limit)
        return _solve_joint(model, family, time_limit, mip_gap)
    except (SolverUnavailable, InstanceTooLarge) as exc:
        return SolveResult("error", None, None, None, getattr(model, "build_s", 0.0), 0.0, solver, "", message=str(exc))


def _solve_joint(model: JointModel, family: str, time_limit: float, mip_gap: float) -> SolveResult:
    from .joint import TooLargeForExact, optimise

    backend = f"f4:{family}"
    if model.precheck_message:
        return SolveResult("infeasible", None, None, None, model.build_s, 0.0, backend, __version__,
                           message=f"infeasible: {model.precheck_message}")
    t0 = time.perf_counter()
    try:
        res = optimise(model.scenario, e_agg=model.e_agg, target_latency_s=model.target_latency_s, seed=model.seed,
                       target_from=model.target_from, exact=family == "exact",
                       milp_solver=family if family in ("highs", "gurobi") else None,
                       milp_time_limit=time_limit, milp_gap=mip_gap)
    except TooLargeForExact as exc:
        return SolveResult("error", None, None, None, model.build_s, time.perf_counter() - t0, backend, __version__,
                           message=str(exc))
    if res.status == "infeasible":
        return SolveResult("infeasible", None, None, None, model.build_s, res.solve_s, backend, __version__,
                           message="infeasible: " + "; ".join(res.messages))
    return SolveResult(res.status, res.objective, res.bound, res.gap, model.build_s, res.solve_s, backend, __version__,
                       decision={"plan": res.plan, "metrics": res.metrics}, message="; ".join(res.messages))
