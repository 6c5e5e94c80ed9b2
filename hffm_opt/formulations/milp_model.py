"""A solver-agnostic MILP: a pyomo model plus how to read the decided part of a plan back out of it.

Formulations (:mod:`.relay_tree`, :mod:`.placement`, :mod:`.association`, :mod:`.association_relaxation`) build a
:class:`MilpModel`; the backends in :mod:`hffm_opt.solvers.milp` solve it. Nothing here imports a solver.
:func:`export` writes the model as an LP or MPS file (pyomo's writers, symbolic names) so any solver can read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import pyomo.environ as pyo

EXPORT_FORMATS = {".lp": "cpxlp", ".mps": "mps"}  # pyomo writer names


@dataclass(eq=False)
class MilpModel:
    """A pyomo ``ConcreteModel`` (minimisation) with its decoder and warm-start encoder.

    - ``name``: what the model is (e.g. ``"F2 relay tree (n=10)"``); ``build_s``: seconds the builder took.
    - ``decoder(model) -> dict``: numpy arrays of the decided part of a plan, read from the variables' values;
      ``encoder(model, warm)``: sets every variable's value from such a dict (a complete, consistent start).
    - ``precheck_message``: None, or why the instance is infeasible as found before solving (names the
      device/edge); the model is still returned and a solve then reports ``infeasible`` with this message.
    - ``families``: constraint/variable component name -> what the family means (used to explain an IIS);
      ``labels``: component name -> function turning an index into words (``"device id 7"``).
    - ``data``: the precomputed coefficient arrays (documented by each builder), for inspection and tests.
    - ``default_start``: a feasible decision found by the builder's heuristic (or None); solvers use it as the
      MIP start when no other warm start is given.
    """

    program: ClassVar[str] = "milp"  # the key of the solver registry's table
    name: str
    model: pyo.ConcreteModel
    decoder: Callable[[pyo.ConcreteModel], dict]
    encoder: Callable[[pyo.ConcreteModel, dict], None]
    build_s: float = 0.0
    precheck_message: str | None = None
    families: dict[str, str] = field(default_factory=dict)
    labels: dict[str, Callable[[Any], str]] = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    default_start: dict | None = None

    def decode(self, model: pyo.ConcreteModel | None = None) -> dict:
        """The decided part of a plan from the current variable values of ``model`` (default: this model)."""
        return self.decoder(self.model if model is None else model)

    def encode(self, warm: dict) -> None:
        """Set the variables' values from a decision dict of the form :meth:`decode` returns (a warm start)."""
        self.encoder(self.model, warm)

    def size(self) -> tuple[int, int]:
        """(number of variables, number of linear constraints) of the pyomo model."""
        n_var = sum(len(v) for v in self.model.component_objects(pyo.Var, active=True))
        n_con = sum(len(c) for c in self.model.component_objects(pyo.Constraint, active=True))
        return n_var, n_con

    def describe(self, component: str, index: Any = None) -> str:
        """Words for one member of a constraint/variable family, e.g. ``capacity[edge id 3]: <meaning>``."""
        label = self.labels.get(component)
        where = "" if index is None else f"[{label(index) if label else index}]"
        meaning = self.families.get(component)
        return f"{component}{where}" + (f" ({meaning})" if meaning else "")


def export_with_symbols(model: MilpModel, path) -> tuple[Path, Any]:
    """Write ``model`` as ``.lp`` or ``.mps`` (chosen by the suffix, symbolic names) and return the path and
    pyomo's symbol map (file names -> pyomo variables and constraints)."""
    path = Path(path)
    fmt = EXPORT_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"path = {str(path)!r}: the suffix must be one of {sorted(EXPORT_FORMATS)}")
    _, smap_id = model.model.write(str(path), format=fmt, io_options={"symbolic_solver_labels": True})
    return path, model.model.solutions.symbol_map[smap_id]


def export(model: MilpModel, path) -> Path:
    """Write ``model`` to ``path`` in LP (``.lp``) or free MPS (``.mps``) format with pyomo's writers.

    Variable and constraint names are the pyomo names (``y[0,1]`` is written ``y(0_1)``). Returns the path.
    """
    return export_with_symbols(model, path)[0]
