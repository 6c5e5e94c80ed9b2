"""What every solver backend returns (:class:`SolveResult`) and the two ways a backend can refuse to run.

Times are wall-clock seconds; ``objective`` and ``bound`` are in the units of the program's objective.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

STATUSES = ("optimal", "feasible", "time_limit", "infeasible", "unbounded", "error")


class SolverUnavailable(RuntimeError):
    """The requested solver backend cannot be imported or has no usable licence; the message says how to install it."""


class InstanceTooLarge(RuntimeError):
    """The instance exceeds what the backend's licence may solve; the message gives the limit and the instance size."""


def relative_gap(objective: float | None, bound: float | None) -> float | None:
    """``|objective - bound| / max(|objective|, 1e-9)``, or None when either is unknown (or not finite)."""
    if objective is None or bound is None or not (np.isfinite(objective) and np.isfinite(bound)):
        return None
    return abs(objective - bound) / max(abs(objective), 1e-9)


@dataclass(frozen=True, eq=False)
class SolveResult:
    """Outcome of one MILP solve.

    - ``status``: one of :data:`STATUSES`. ``optimal`` = proven optimal (relative gap <= 1e-6, reported as
      ``gap`` 0); ``feasible`` = a solution whose proven gap is within the requested tolerance but above 1e-6, or
      a solution the solver could not certify; ``time_limit`` = stopped by the time limit (``decision`` holds
      the incumbent if there is one); ``infeasible``/``unbounded`` as proven by the solver; ``error`` otherwise.
    - ``objective``: value of the returned solution (None without one); ``bound``: best proven bound on the
      optimum (None if unknown); ``gap``: ``|objective - bound| / max(|objective|, 1e-9)``, None if unknown.
    - ``build_s``: formulation build plus hand-over to the backend (s); ``solve_s``: the backend's run and the
      solution read-back (s).
    - ``backend`` (``"highs"``, ``"gurobi"``) and its ``version`` string.
    - ``decision``: the decided part of a plan as numpy arrays (see each formulation's ``decode``); empty
      without a solution.
    - ``message``: human-readable explanation; for an infeasible instance the responsible constraint families and
      the devices/edges they name.
    - ``log``: the solver's log (may be empty).
    """

    status: str
    objective: float | None
    bound: float | None
    gap: float | None
    build_s: float
    solve_s: float
    backend: str
    version: str
    decision: dict = field(default_factory=dict)
    message: str = ""
    log: str = ""

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"status = {self.status!r}: must be one of {STATUSES}")

    @property
    def ok(self) -> bool:
        """True when a solution is available (optimal, feasible, or an incumbent at the time limit)."""
        return bool(self.decision) and self.status in ("optimal", "feasible", "time_limit")

    def summary(self) -> dict:
        """Flat JSON-ready dict (no decision arrays, no log)."""
        return {"status": self.status, "objective": self.objective, "bound": self.bound, "gap": self.gap,
                "build_s": self.build_s, "solve_s": self.solve_s, "backend": self.backend, "version": self.version,
                "message": self.message}
