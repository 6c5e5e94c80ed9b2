"""A solver-agnostic convex program: a cvxpy problem plus how to read, price and verify the decided allocation.

The F3 builders (:mod:`.allocation`) return a :class:`ConvexModel`; :mod:`hffm_opt.solvers.convex` runs it on a
cvxpy solver and :mod:`hffm_opt.solvers.fast_kkt` solves the same data by its KKT conditions. Nothing here
imports a solver backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, ClassVar

import cvxpy as cp


@dataclass(eq=False)
class ConvexModel:
    """One convex program (a minimisation in scaled units) and its interpretation in SI units.

    - ``name``: what the model is; ``kind``: ``"min_energy"``, ``"min_max_latency"`` or ``"cpu_block"``;
    - ``problem``: the scaled cvxpy problem; ``data``: the instance (SI arrays the fast solver reads);
    - ``decoder(model) -> dict``: the decided allocation in SI units from the variables' values;
    - ``objective(decision) -> float``: the program's objective in SI units (J, or s for the latency), recomputed
      from the decision, never taken from the solver;
    - ``verifier(decision) -> str | None``: None when the decision satisfies every constraint and the optimality
      (KKT) conditions within ``tolerance``, else the reason;
    - ``precheck_message``: None, or why the instance is infeasible (names the device or edge server);
    - ``build_s``: seconds the builder took.
    """

    program: ClassVar[str] = "convex"  # the key of the solver registry's table
    name: str
    kind: str
    problem: cp.Problem
    data: object
    decoder: Callable[["ConvexModel"], dict]
    objective: Callable[[dict], float]
    verifier: Callable[[dict], str | None]
    precheck_message: str | None = None
    build_s: float = 0.0
    variables: dict = field(default_factory=dict)

    def decode(self) -> dict:
        """The decided allocation (SI) from the current variable values."""
        return self.decoder(self)

    def verify(self, decision: dict) -> str | None:
        """None when ``decision`` is feasible and optimal within tolerance, else the failed check in words."""
        return self.verifier(decision)
