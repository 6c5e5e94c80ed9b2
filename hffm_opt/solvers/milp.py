"""Solve a :class:`~hffm_opt.formulations.milp_model.MilpModel` with HiGHS or Gurobi and return a :class:`Result`.

- ``"highs"`` (default, no licence): pyomo's ``appsi_highs`` interface; the best bound is HiGHS's MIP dual bound.
- ``"gurobi"``: the model is written as an LP file with symbolic names and read by gurobipy in a private, silent
  environment. Gurobi's pip licence is size-limited (at most :data:`GUROBI_SIZE_LIMIT` variables and linear
  constraints): the licence is probed once per process, and an oversized model raises :class:`InstanceTooLarge`
  before anything is solved. An infeasible model gets an irreducible infeasible subsystem (``computeIIS``),
  summarised by constraint family and the devices/edges it names.

Solver output never reaches the process's stdout (the Gurobi licence banner and HiGHS's header included): it is
captured into ``Result.log``. Times are wall-clock seconds.
"""

from __future__ import annotations

import logging
import tempfile
import time
from io import StringIO
from pathlib import Path

from pyomo.common.tee import capture_output

from ..errors import InstanceTooLarge, SolverUnavailable
from ..formulations.milp_model import MilpModel, export_with_symbols
from .result import Result, relative_gap

BACKENDS = ("highs", "gurobi")
GUROBI_SIZE_LIMIT = 2000  # variables and linear constraints allowed by Gurobi's size-limited (pip) licence
OPTIMAL_GAP = 1e-6  # a proven relative gap at or below this is reported as optimal (gap 0)
GUROBI_INSTALL = 'pip install "hffm-opt[gurobi]"'
_IIS_SHOWN = 12  # members of each constraint family of an IIS listed by name in the message

_gurobi_limited: bool | None = None  # licence probe, cached per process


def forget_highs_threads() -> None:
    """Drop HiGHS's global task scheduler, for a process just forked from one that has solved with HiGHS: the child
    inherits the scheduler without its worker threads, and its first solve would wait for them forever. The next
    solve starts a new one. A no-op where highspy is missing."""
    try:
        import highspy
    except ImportError:  # pragma: no cover - highspy is a dependency
        return
    highspy.Highs.resetGlobalScheduler(False)


def solve_milp(model: MilpModel, solver: str = "highs", time_limit: float = 60.0, mip_gap: float = 1e-2,
               warm_start: dict | None = None) -> Result:
    """Solve ``model`` (a minimisation) on ``solver`` (``"highs"`` or ``"gurobi"``).

    ``time_limit`` in seconds, ``mip_gap`` the relative MIP gap at which to stop, ``warm_start`` a decision
    dict (as ``model.decode`` returns) used as a MIP start (default: the builder's ``model.default_start``, if
    any). Raises :class:`SolverUnavailable` when the backend
    cannot be used and :class:`InstanceTooLarge` when the licence cannot solve an instance of this size; every
    other outcome (infeasible included) is a :class:`Result`.
    """
    if solver not in BACKENDS:
        raise ValueError(f"solver = {solver!r}: must be one of {BACKENDS}")
    if not (time_limit > 0):
        raise ValueError(f"time_limit = {time_limit!r}: must be > 0 s")
    if not (mip_gap >= 0):
        raise ValueError(f"mip_gap = {mip_gap!r}: must be >= 0")
    if warm_start is None:
        warm_start = model.default_start
    if warm_start is not None:
        model.encode(warm_start)
    if solver == "highs":
        return _solve_highs(model, time_limit, mip_gap, warm_start is not None)
    return _solve_gurobi(model, time_limit, mip_gap, warm_start is not None)


# ---------------------------------------------------------------------- shared helpers
def _status_with_solution(objective, bound) -> tuple[str, float | None]:
    gap = relative_gap(objective, bound)
    if gap is not None and gap <= OPTIMAL_GAP:
        return "optimal", 0.0
    return "feasible", gap


def _infeasible_message(model: MilpModel, members: list[tuple[str, object]], backend: str) -> str:
    parts = []
    if model.precheck_message:
        parts.append(model.precheck_message)
    if members:
        groups: dict[str, list] = {}
        for name, idx in members:
            groups.setdefault(name, []).append(idx)
        text = []
        for name, idxs in groups.items():
            label = model.labels.get(name, str)
            shown = ", ".join(label(i) for i in idxs[:_IIS_SHOWN] if i is not None)
            more = f", and {len(idxs) - _IIS_SHOWN} more" if len(idxs) > _IIS_SHOWN else ""
            meaning = model.families.get(name)
            text.append(f"{name}" + (f" ({meaning})" if meaning else "") + f" x{len(idxs)}"
                        + (f": {shown}{more}" if shown else ""))
        parts.append(f"{backend} irreducible infeasible subsystem: " + "; ".join(text))
    if not parts:
        parts.append(f"{backend} proved {model.name!r} infeasible but gave no infeasible subsystem; "
                     "solve with solver='gurobi' for the responsible constraints")
    return "infeasible: " + " | ".join(parts)


def _component(obj) -> tuple[str, object]:
    """(family name, index) of a pyomo constraint or variable data object."""
    comp = obj.parent_component()
    return comp.local_name, (obj.index() if comp.is_indexed() else None)


# ---------------------------------------------------------------------- HiGHS
def _highs_version() -> str:
    import highspy

    try:
        return f"{highspy.HIGHS_VERSION_MAJOR}.{highspy.HIGHS_VERSION_MINOR}.{highspy.HIGHS_VERSION_PATCH}"
    except AttributeError:  # older highspy
        return "unknown"


def _solve_highs(model: MilpModel, time_limit: float, mip_gap: float, warm: bool) -> Result:
    try:
        from pyomo.contrib.appsi.base import TerminationCondition as TC
        from pyomo.contrib.appsi.solvers import Highs
    except ImportError as exc:  # pragma: no cover - pyomo is a dependency
        raise SolverUnavailable(f"pyomo's HiGHS interface cannot be imported ({exc}): pip install pyomo highspy") from None
    opt = Highs()
    if not opt.available():
        raise SolverUnavailable("HiGHS is not available to pyomo: pip install highspy")
    log_buf = StringIO()
    logger = logging.Logger("hffm_opt.solvers.highs", logging.INFO)  # private (unregistered): this solve's log only
    logger.addHandler(logging.StreamHandler(log_buf))
    cfg = opt.config
    cfg.load_solution = False
    cfg.time_limit = float(time_limit)
    cfg.mip_gap = float(mip_gap)
    cfg.warmstart = warm
    cfg.solver_output_logger = logger
    cfg.log_level = logging.INFO
    opt.highs_options = {"mip_abs_gap": 1e-10}  # as Gurobi's MIPGapAbs: the relative gap is what stops a solve
    t0 = time.perf_counter()
    with capture_output(capture_fd=True) as out:
        opt.set_instance(model.model)
        for key in opt.update_config.keys():  # the instance was just handed over: no change to look for
            if key != "treat_fixed_vars_as_params":
                setattr(opt.update_config, key, False)
        t1 = time.perf_counter()
        res = opt.solve(model.model)
    tc = res.termination_condition
    decision, objective, bound = {}, res.best_feasible_objective, res.best_objective_bound
    if objective is not None and tc in (TC.optimal, TC.maxTimeLimit, TC.maxIterations, TC.objectiveLimit,
                                         TC.interrupted):
        res.solution_loader.load_vars()
        decision = model.decode()
    else:
        objective = None
    message = ""
    if tc == TC.optimal and decision:
        status, gap = _status_with_solution(objective, bound)
        message = "optimal" if status == "optimal" else f"stopped at relative gap {gap:.3g} (requested {mip_gap:g})"
    elif tc in (TC.maxTimeLimit, TC.maxIterations, TC.interrupted, TC.objectiveLimit):
        status, gap = "time_limit", relative_gap(objective, bound)
        message = f"stopped by {tc.name} (time limit {time_limit:g} s)" + ("" if decision else " without a solution")
    elif tc in (TC.infeasible, TC.infeasibleOrUnbounded):
        status, gap, bound = "infeasible", None, None
        message = _infeasible_message(model, _highs_iis(opt), "HiGHS")
        if tc == TC.infeasibleOrUnbounded:
            message += " (HiGHS: infeasible or unbounded)"
    elif tc == TC.unbounded:
        status, gap, bound, message = "unbounded", None, None, "the objective is unbounded below"
    else:
        status, gap, message = "error", None, f"HiGHS ended with {tc.name}"
    t2 = time.perf_counter()
    log = log_buf.getvalue() + out.getvalue()
    return Result(status=status, objective=objective, bound=bound, build_s=model.build_s + (t1 - t0),
                  runtime_s=t2 - t1, backend="highs", backend_version=_highs_version(), decision=decision,
                  message=message, log=log)


def _highs_iis(opt) -> list[tuple[str, object]]:
    """Rows of HiGHS's infeasible subsystem (of the LP relaxation; empty when HiGHS gives none)."""
    try:
        h = opt._solver_model
        with capture_output(capture_fd=True):
            status, iis = h.getIis()
        rows = [int(i) for i in getattr(iis, "row_index_", [])]
        con_map = opt._solver_con_to_pyomo_con_map
        return [_component(con_map[i]) for i in rows if i in con_map]
    except Exception:  # noqa: BLE001 - the IIS is a bonus; the pre-check message still explains the cause
        return []


# ---------------------------------------------------------------------- Gurobi
def _import_gurobipy():
    try:
        with capture_output(capture_fd=True):
            import gurobipy
    except ImportError:
        raise SolverUnavailable(f"solver 'gurobi' needs gurobipy, which is not installed: {GUROBI_INSTALL}") from None
    return gurobipy


def _quiet_env(gp, log_file: str | None = None):
    env = gp.Env(empty=True)
    env.setParam("OutputFlag", 1 if log_file else 0)
    env.setParam("LogToConsole", 0)
    if log_file:
        env.setParam("LogFile", log_file)
    env.start()
    return env


def gurobi_size_limited() -> bool:
    """True when gurobipy runs under the size-limited licence (probed once: a model of
    ``GUROBI_SIZE_LIMIT + 1`` variables is refused with error 10010). Raises :class:`SolverUnavailable`
    when gurobipy is missing or has no usable licence."""
    global _gurobi_limited
    if _gurobi_limited is not None:
        return _gurobi_limited
    gp = _import_gurobipy()
    try:
        with capture_output(capture_fd=True):
            env = _quiet_env(gp)
            probe = gp.Model(env=env)
            probe.addVars(GUROBI_SIZE_LIMIT + 1)
            try:
                probe.optimize()
                _gurobi_limited = False
            except gp.GurobiError as exc:
                if exc.errno != 10010:
                    raise
                _gurobi_limited = True
            finally:
                probe.dispose()
                env.dispose()
    except gp.GurobiError as exc:
        raise SolverUnavailable(f"gurobipy is installed but cannot solve (Gurobi error {exc.errno}: {exc}); "
                                f"check the licence or reinstall: {GUROBI_INSTALL}") from None
    return _gurobi_limited


def _too_large(model: MilpModel, n_var: int, n_con: int) -> InstanceTooLarge:
    return InstanceTooLarge(
        f"{model.name} is too large for Gurobi's size-limited pip licence: it has {n_var} variables and {n_con} "
        f"linear constraints, the licence allows at most {GUROBI_SIZE_LIMIT} variables and {GUROBI_SIZE_LIMIT} "
        "linear constraints. Use solver='highs', a smaller instance, or a full Gurobi licence.")


def _solve_gurobi(model: MilpModel, time_limit: float, mip_gap: float, warm: bool) -> Result:
    gp = _import_gurobipy()
    GRB = gp.GRB
    t0 = time.perf_counter()
    limited = gurobi_size_limited()
    n_var, n_con = model.size()
    if limited and (n_var > GUROBI_SIZE_LIMIT or n_con > GUROBI_SIZE_LIMIT):
        raise _too_large(model, n_var, n_con)
    version = ".".join(str(v) for v in gp.gurobi.version())
    with tempfile.TemporaryDirectory(prefix="hffm_gurobi_") as tmp:
        log_file = str(Path(tmp) / "gurobi.log")
        with capture_output(capture_fd=True) as out:
            path, smap = export_with_symbols(model, Path(tmp) / "model.lp")
            env = _quiet_env(gp, log_file)
            g = gp.read(str(path), env)
        try:
            if limited and (g.NumVars > GUROBI_SIZE_LIMIT or g.NumConstrs > GUROBI_SIZE_LIMIT):
                raise _too_large(model, g.NumVars, g.NumConstrs)
            by_symbol = smap.bySymbol
            g_vars = g.getVars()
            py_vars = [by_symbol.get(v.VarName) for v in g_vars]
            g.Params.TimeLimit = float(time_limit)
            g.Params.MIPGap = float(mip_gap)
            if warm:
                for gv, pv in zip(g_vars, py_vars):
                    if pv is not None and pv.value is not None:
                        gv.Start = float(pv.value)
            t1 = time.perf_counter()
            with capture_output(capture_fd=True) as out2:
                try:
                    g.optimize()
                    if g.Status == GRB.INF_OR_UNBD:  # tell the two apart
                        g.Params.DualReductions = 0
                        g.optimize()
                except gp.GurobiError as exc:
                    if exc.errno == 10010:
                        raise _too_large(model, g.NumVars, g.NumConstrs) from None
                    raise
            st = g.Status
            decision, objective, bound, message = {}, None, None, ""
            if g.SolCount > 0 and st not in (GRB.INFEASIBLE, GRB.UNBOUNDED, GRB.INF_OR_UNBD):
                objective = float(g.ObjVal)
                bound = float(g.ObjBound) if g.IsMIP else objective
                for gv, pv, x in zip(g_vars, py_vars, g.getAttr("X", g_vars)):
                    if pv is not None:
                        pv.set_value(x, skip_validation=True)
                decision = model.decode()
            if st == GRB.OPTIMAL and decision:
                status, gap = _status_with_solution(objective, bound)
                message = "optimal" if status == "optimal" else f"stopped at relative gap {gap:.3g} (requested {mip_gap:g})"
            elif st in (GRB.TIME_LIMIT, GRB.INTERRUPTED, GRB.NODE_LIMIT, GRB.ITERATION_LIMIT, GRB.SOLUTION_LIMIT):
                status, gap = "time_limit", relative_gap(objective, bound)
                message = (f"stopped by Gurobi status {st} (time limit {time_limit:g} s)"
                           + ("" if decision else " without a solution"))
            elif st == GRB.INFEASIBLE:
                status, gap = "infeasible", None
                message = _infeasible_message(model, _gurobi_iis(g, by_symbol), "Gurobi")
            elif st == GRB.UNBOUNDED:
                status, gap, message = "unbounded", None, "the objective is unbounded below"
            elif decision:  # SUBOPTIMAL, NUMERIC with an incumbent
                status, gap = "feasible", relative_gap(objective, bound)
                message = f"Gurobi status {st}: a solution without an optimality proof"
            else:
                status, gap, message = "error", None, f"Gurobi ended with status {st} and no solution"
            t2 = time.perf_counter()
        finally:
            g.dispose()
            env.dispose()
        log = Path(log_file).read_text() if Path(log_file).exists() else ""
    log += out.getvalue() + out2.getvalue()
    return Result(status=status, objective=objective, bound=bound, build_s=model.build_s + (t1 - t0),
                  runtime_s=t2 - t1, backend="gurobi", backend_version=version, decision=decision, message=message,
                  log=log)


def _gurobi_iis(g, by_symbol) -> list[tuple[str, object]]:
    """Constraint families (and variable bounds) of Gurobi's irreducible infeasible subsystem."""
    try:
        g.computeIIS()
    except Exception:  # noqa: BLE001 - no IIS: the message falls back to the pre-check
        return []
    members = []
    for c in g.getConstrs():
        if c.IISConstr:
            obj = by_symbol.get(c.ConstrName)
            if obj is not None:
                members.append(_component(obj))
    for v in g.getVars():
        if v.IISLB or v.IISUB:
            obj = by_symbol.get(v.VarName)
            if obj is not None:
                members.append(_component(obj))
    return members
