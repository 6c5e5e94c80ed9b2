"""One entry point for every program: ``solve(model, solver=..., time_limit=..., mip_gap=..., warm_start=...)``.

Which backend can run which model is a table (:data:`ACCEPTS`), not an ``if`` chain:

- a MILP (:class:`~hffm_opt.formulations.milp_model.MilpModel`: F1, F2, association): ``highs`` (default),
  ``gurobi``;
- an F3 convex program (:class:`~hffm_opt.formulations.convex_model.ConvexModel`): ``fast`` (default, the KKT
  solvers of :mod:`.fast.kkt`) or ``cvxpy:<SOLVER>`` (``cvxpy`` alone means CLARABEL);
- the F4 joint model (:class:`~hffm_opt.formulations.joint.JointModel`): ``highs`` (default) or ``gurobi`` (F4
  with F2 relay-tree MILPs on that backend as extra candidates in small clusters), ``fast`` (F4 without MILPs),
  ``exact`` (enumeration of every structure with the convex inner problem; refuses large instances with the count),
  ``local-search`` (single moves from the starting plan, each priced by the convex inner problem).

Every call returns the one :class:`~hffm_opt.solvers.result.Result`: a missing backend, an instance too large for a licence or for the
exact mode, and a point that fails its KKT check are ``error`` results whose message says why (and how to install
a missing backend); an infeasible instance is ``infeasible`` with the pre-check's finding (device or edge named)
and, on Gurobi, the irreducible infeasible subsystem. Times in seconds.
"""

from __future__ import annotations

import math

from .._version import __version__
from ..errors import InstanceTooLarge, SolverUnavailable
from .result import Result, Status

# which backends solve which kind of program (the model's ``program``): the first is the default
ACCEPTS = {"milp": ("highs", "gurobi"), "convex": ("fast", "cvxpy"),
           "joint": ("highs", "gurobi", "fast", "exact", "local-search")}
SOLVER_NAMES = ("highs", "gurobi", "cvxpy:<SOLVER>", "fast", "exact", "local-search")


def solve(model, solver: str | None = None, time_limit: float = 60.0, mip_gap: float = 1e-2,
          warm_start: dict | None = None, progress=None) -> Result:
    """Solve ``model`` on ``solver`` (None: the model's first accepted backend, see :data:`ACCEPTS`).

    ``time_limit`` (s) and ``mip_gap`` (relative) bound MILP solves (the F2 MILPs of F4 included; CLARABEL also
    takes the time limit); ``warm_start`` is a MILP decision dict used as the MIP start; ``progress`` wraps F4's
    iteration over clusters (e.g. a tqdm). Raises ``ValueError`` only for a solver name that does not exist or does
    not fit the model.
    """
    accepted = ACCEPTS.get(getattr(model, "program", None))
    if accepted is None:
        raise ValueError(f"model = {type(model).__name__}: not a model of hffm_opt.formulations (a MilpModel, "
                         "ConvexModel or JointModel)")
    solver = accepted[0] if solver is None else solver
    family = solver.split(":", 1)[0]
    if family not in ("highs", "gurobi", "cvxpy", "fast", "exact",
                      "local-search") or (":" in solver and family != "cvxpy"):
        raise ValueError(f"solver = {solver!r}: must be one of {SOLVER_NAMES}")
    if family not in accepted:
        raise ValueError(f"solver = {solver!r}: a {type(model).__name__} is solved by {accepted}")
    try:
        if model.program == "milp":
            from .milp import solve_milp

            return solve_milp(model, solver, time_limit=time_limit, mip_gap=mip_gap, warm_start=warm_start)
        if model.program == "convex":
            if family == "fast":
                from .fast.solve import solve_fast

                return solve_fast(model)
            from .convex import DEFAULT_SOLVER, solve_convex

            return solve_convex(model, solver.split(":", 1)[1] if ":" in solver else DEFAULT_SOLVER, time_limit)
        return _solve_joint(model, family, time_limit, mip_gap, progress)
    except (SolverUnavailable, InstanceTooLarge) as exc:
        return Result(status=Status.ERROR, backend=solver, build_s=getattr(model, "build_s", 0.0), message=str(exc))


def _solve_joint(model, family: str, time_limit: float, mip_gap: float, progress) -> Result:
    from .f4.decomposition import improve, optimise

    if model.precheck_message:
        return Result(status=Status.INFEASIBLE, backend=f"f4:{family}", backend_version=__version__,
                      build_s=model.build_s, message=f"infeasible: {model.precheck_message}")
    capped = math.isfinite(getattr(model, "round_cap_s", math.inf))
    if capped and (family == "local-search" or getattr(model, "alternates", False)):
        return Result(status=Status.ERROR, backend=f"f4:{family}", backend_version=__version__, build_s=model.build_s,
                      message=f"round_cap_s = {model.round_cap_s!r}: only plain F4 ('optimal', 'optimal-exact') "
                              "caps the edge rounds")
    if family == "local-search":
        return improve(model)
    full = getattr(model, "alternates", False)  # full F4: placement, tiers and association too
    if full and model.objective == "energy":
        if family == "exact":
            from .f4.enumeration import exact_full

            return exact_full(model)
        from .f4.alternation import alternate

        return alternate(model, milp_solver=family if family in ("highs", "gurobi") else None,
                         milp_time_limit=time_limit, milp_gap=mip_gap, progress=progress)
    if full and family == "exact":
        return Result(status=Status.ERROR, backend="f4:exact", backend_version=__version__, build_s=model.build_s,
                      message=f"objective = {model.objective!r}: the exact mode of full F4 (coverage, edge_tiers or "
                              "association free) solves the energy objective only; use 'optimal'")
    energy_solver = None
    if full:  # latency or weighted objective: full F4 at each target
        from .f4.alternation import alternate as energy_solver
    return optimise(model, exact=family == "exact", milp_solver=family if family in ("highs", "gurobi") else None,
                    milp_time_limit=time_limit, milp_gap=mip_gap, progress=progress, energy_solver=energy_solver)
