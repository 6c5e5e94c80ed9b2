"""What every solve returns, whatever the backend: one :class:`Result` with one :class:`Status`.

Times are wall-clock seconds; ``objective`` and ``bound`` are in the units of the program's objective (for F4:
energy per edge round, J).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ..evaluate import Metrics
    from ..plan import Plan

GAP_FLOOR = 1e-9  # denominator floor of the relative gap
OPTIMAL_GAP = 1e-6  # a proven relative gap at or below this is reported as optimal (gap 0)


class Status(str, Enum):
    """How a solve ended. ``optimal``: proven optimal; ``feasible``: a solution whose optimality is not proven
    (or whose proven gap is above :data:`OPTIMAL_GAP`); ``time_limit``: stopped by the time limit (with the
    incumbent, if any); ``infeasible``/``unbounded``: as proven; ``error``: no answer (the message says why)."""

    OPTIMAL = "optimal"
    FEASIBLE = "feasible"
    TIME_LIMIT = "time_limit"
    INFEASIBLE = "infeasible"
    UNBOUNDED = "unbounded"
    ERROR = "error"

    def __str__(self) -> str:
        return self.value


def relative_gap(objective: float | None, bound: float | None) -> float | None:
    """The one gap definition: ``|objective - bound| / max(|objective|, 1e-9)``; None when either is unknown or
    not finite."""
    if objective is None or bound is None or not (np.isfinite(objective) and np.isfinite(bound)):
        return None
    return abs(objective - bound) / max(abs(objective), GAP_FLOOR)


@dataclass(frozen=True, eq=False, kw_only=True)
class Result:
    """The outcome of one solve, for every backend (MILP, cvxpy, fast, exact, F4).

    - ``status`` (:class:`Status`; a string is converted); ``objective``: value of the returned solution (None
      without one); ``bound``: best proven bound on the optimum (None if unknown); :attr:`gap` from both.
    - ``fixed_objective``: the part of the objective no decision of the program can change (for F4 the backhaul
      transfers and one edge downlink per cluster, J per edge round), None if not separated; it gives
      :attr:`gap_controllable`, the gap on what the plan can change.
    - ``build_s``: formulation build plus hand-over to the backend (s); ``runtime_s``: the backend's run and the
      solution read-back (s).
    - ``backend`` (``"highs"``, ``"gurobi"``, ``"cvxpy:CLARABEL"``, ``"fast"``, ``"f4:highs"``, ...) and
      ``backend_version``: the version of the library that solved (HiGHS, Gurobi, cvxpy, or hffm-opt for the
      package's own solvers).
    - the decided part: ``decision`` (arrays, see each formulation's ``decode``) for a single program; ``plan``
      (a :class:`~hffm_opt.plan.Plan`) and its ``metrics`` (from ``evaluate``) for F4. Empty / None without one.
    - ``stats``: backend-specific counts (e.g. structures priced, latency target); ``message``: human-readable
      explanation (for an infeasible instance the responsible constraint and the devices/edges it names);
      ``log``: the solver's log (may be empty).
    """

    status: Status
    backend: str
    objective: float | None = None
    bound: float | None = None
    fixed_objective: float | None = None
    build_s: float = 0.0
    runtime_s: float = 0.0
    backend_version: str = ""
    decision: dict = field(default_factory=dict)
    plan: Plan | None = None
    metrics: Metrics | None = None
    stats: dict = field(default_factory=dict)
    message: str = ""
    log: str = ""

    def __post_init__(self):
        try:
            object.__setattr__(self, "status", Status(self.status))
        except ValueError:
            raise ValueError(f"status = {self.status!r}: must be one of {[s.value for s in Status]}") from None
        for name in ("objective", "bound", "fixed_objective"):  # plain finite floats or None (unknown), so summaries are strict JSON
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, float(value) if np.isfinite(value) else None)

    @property
    def gap(self) -> float | None:
        """Proven relative gap (:func:`relative_gap`), None if unknown."""
        return relative_gap(self.objective, self.bound)

    @property
    def gap_controllable(self) -> float | None:
        """The proven gap relative to the controllable part of the objective, ``|objective - bound| /
        max(|objective - fixed_objective|, 1e-9)``; None if the gap or the fixed part is unknown."""
        if self.gap is None or self.fixed_objective is None:
            return None
        return abs(self.objective - self.bound) / max(abs(self.objective - self.fixed_objective), GAP_FLOOR)

    @property
    def ok(self) -> bool:
        """True when a solution is available (optimal, feasible, or an incumbent at the time limit)."""
        has = bool(self.decision) or self.plan is not None
        return has and self.status in (Status.OPTIMAL, Status.FEASIBLE, Status.TIME_LIMIT)

    def summary(self) -> dict:
        """Flat JSON-ready dict (no decision arrays, plan or log)."""
        return {"status": self.status.value, "objective": self.objective, "bound": self.bound, "gap": self.gap,
                "fixed_objective": self.fixed_objective, "gap_controllable": self.gap_controllable,
                "build_s": self.build_s, "runtime_s": self.runtime_s, "backend": self.backend,
                "backend_version": self.backend_version, "message": self.message, **self.stats}
