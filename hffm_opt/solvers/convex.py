"""The ``cvxpy:<SOLVER>`` backend: solve a :class:`~hffm_opt.formulations.convex_model.ConvexModel` with a conic
solver and return a :class:`Result`, never trusting an unverified point.

An instance the builder's pre-check found infeasible is reported ``infeasible`` with that message (nothing is
solved). A solver status other than ``optimal`` (``optimal_inaccurate`` included), or a returned point that fails
the model's feasibility/KKT check, is a failure: status ``error`` with the reason. A verified point is reported
``optimal`` with the objective recomputed in SI units and bound = objective (certified by the KKT check to
the model's tolerance). Times in seconds.
"""

from __future__ import annotations

import time
import warnings

import cvxpy as cp

from ..errors import SolverUnavailable
from ..formulations.convex_model import ConvexModel
from .result import Result

DEFAULT_SOLVER = "CLARABEL"
INSTALL = {"ECOS": "pip install ecos", "SCS": "pip install scs", "CLARABEL": "pip install clarabel",
           "HIGHS": "pip install highspy", "GUROBI": 'pip install "hffm-opt[gurobi]"', "MOSEK": "pip install mosek"}


def solve_convex(model: ConvexModel, solver: str = DEFAULT_SOLVER, time_limit: float | None = None) -> Result:
    """Solve ``model`` with cvxpy's ``solver`` (e.g. ``"CLARABEL"``, ``"ECOS"``, ``"SCS"``).

    ``time_limit`` (s) is passed where the solver accepts one. Raises :class:`SolverUnavailable` when cvxpy
    does not have ``solver`` installed (the message says how to install it).
    """
    solver = solver.upper()
    if solver not in cp.installed_solvers():
        how = INSTALL.get(solver, f"install the package that provides cvxpy's {solver} interface")
        raise SolverUnavailable(f"solver 'cvxpy:{solver}' is not installed in this environment: {how} "
                                f"(installed: {', '.join(cp.installed_solvers())})")
    version = f"cvxpy {cp.__version__}"
    if model.precheck_message:
        return Result(status="infeasible", build_s=model.build_s, runtime_s=0.0, backend=f"cvxpy:{solver}",
                      backend_version=version, message=f"infeasible: {model.precheck_message}")
    options = {"time_limit": float(time_limit)} if time_limit and solver == "CLARABEL" else {}
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():  # an inaccurate status is reported below as a failure; the warning is noise
            warnings.simplefilter("ignore")
            model.problem.solve(solver=solver, **options)
    except cp.error.SolverError as exc:
        return _error(model, solver, version, time.perf_counter() - t0, f"{solver} failed: {exc}")
    solve_s = time.perf_counter() - t0
    status = model.problem.status
    if status in (cp.INFEASIBLE, cp.UNBOUNDED):
        kind = "infeasible" if status == cp.INFEASIBLE else "unbounded"
        return Result(status=kind, build_s=model.build_s, runtime_s=solve_s, backend=f"cvxpy:{solver}",
                      backend_version=version, message=f"{solver} reports the scaled program {kind}")
    if status != cp.OPTIMAL:
        return _error(model, solver, version, solve_s, f"{solver} status {status!r} (treated as a failure, not a result)")
    decision = model.decode()
    reason = model.verify(decision)
    if reason:
        return _error(model, solver, version, solve_s, f"{solver} returned 'optimal' but the point is rejected: {reason}")
    objective = model.objective(decision)
    return Result(status="optimal", objective=objective, bound=objective, build_s=model.build_s, runtime_s=solve_s,
                  backend=f"cvxpy:{solver}", backend_version=version, decision=decision,
                  message="optimal (KKT-checked)")


def _error(model: ConvexModel, solver: str, version: str, solve_s: float, message: str) -> Result:
    return Result(status="error", build_s=model.build_s, runtime_s=solve_s, backend=f"cvxpy:{solver}",
                  backend_version=version, message=message)
