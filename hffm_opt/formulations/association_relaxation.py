"""The association relaxation behind full F4's bound when the association is free: which edges open, in which
mode, and which devices join them, each device priced alone in its role (a mixed-integer program).

Units: J per period, Hz. The role costs are given (computed by :mod:`hffm_opt.solvers.f4.association_bound`):

- ``direct[u, e]`` a direct member's least energy, ``band[u, e]`` the least band it needs (inf: not allowed);
- ``member[u, e]`` a relay-tree member's least energy (or, where it can only be the aggregator, the aggregator's);
- ``component[u]`` the device's D2D component (a tree's members share one);
- ``open_direct[e]`` / ``open_tree[e, c]`` the fixed energy of edge ``e`` open as a direct cluster / as a tree in
  component ``c`` (less the aggregator's largest saving), ``bandwidth_hz[e]`` its band.

Program: binaries ``mode[e, k]`` (k = direct, or a component with a candidate of ``e``) with at most one per edge
(``one_mode``), ``x[u, e, k]`` device ``u`` joins ``e`` in mode ``k`` (only a direct mode or its own component's)
with ``x <= mode`` (``needs_mode``), each device exactly once (``assign``), the direct members' bands within the
edge's band (``band``); minimise the open modes' fixed energy plus the members' energies. ``decode`` ->
{"association": (U,) int}. :func:`build_edge_cover` is the fixed part alone: the least fixed energy of open edges
that give every device one of its candidates.
"""

from __future__ import annotations

import time

import numpy as np
import pyomo.environ as pyo

from .milp_model import MilpModel

DIRECT = -1  # the mode index of a direct cluster (tree modes are the component ids, >= 0)


def build_association_relaxation(direct: np.ndarray, band: np.ndarray, member: np.ndarray, component: np.ndarray,
                                 open_direct: np.ndarray, open_tree: dict, bandwidth_hz: np.ndarray,
                                 name: str = "association relaxation") -> MilpModel:
    """The program of the module docstring; ``open_tree`` maps (edge, component) to its fixed energy (J)."""
    t0 = time.perf_counter()
    n, n_e = direct.shape
    modes = [(e, DIRECT) for e in range(n_e) if np.isfinite(direct[:, e]).any()] + sorted(open_tree)
    joins = [(u, e, DIRECT) for u, e in zip(*np.nonzero(np.isfinite(direct)))]
    joins += [(u, e, int(component[u])) for u, e in zip(*np.nonzero(np.isfinite(member)))
              if (e, int(component[u])) in open_tree]
    joins = [(int(u), int(e), int(k)) for u, e, k in joins]
    cost = {j: float(direct[j[0], j[1]] if j[2] == DIRECT else member[j[0], j[1]]) for j in joins}
    fixed = {(e, k): float(open_direct[e] if k == DIRECT else open_tree[(e, k)]) for e, k in modes}
    m = pyo.ConcreteModel(name=f"{name} ({n} devices x {n_e} edges)")
    m.MODES = pyo.Set(initialize=modes, dimen=2, ordered=True)
    m.JOINS = pyo.Set(initialize=joins, dimen=3, ordered=True)
    m.mode = pyo.Var(m.MODES, domain=pyo.Binary)
    m.x = pyo.Var(m.JOINS, domain=pyo.Binary)
    of_dev, of_edge = [[] for _ in range(n)], [[] for _ in range(n_e)]
    for j in joins:
        of_dev[j[0]].append(j)
    for mode in modes:
        of_edge[mode[0]].append(mode)
    m.U = pyo.Set(initialize=[u for u in range(n) if of_dev[u]], ordered=True)
    m.assign = pyo.Constraint(m.U, rule=lambda m, u: sum(m.x[j] for j in of_dev[u]) == 1)
    m.needs_mode = pyo.Constraint(m.JOINS, rule=lambda m, u, e, k: m.x[u, e, k] <= m.mode[e, k])
    m.E = pyo.Set(initialize=[e for e in range(n_e) if len(of_edge[e]) > 1], ordered=True)
    m.one_mode = pyo.Constraint(m.E, rule=lambda m, e: sum(m.mode[k] for k in of_edge[e]) <= 1)
    direct_at = [[j for j in joins if j[1] == e and j[2] == DIRECT] for e in range(n_e)]
    m.B = pyo.Set(initialize=[e for e in range(n_e) if sum(band[j[0], e] for j in direct_at[e]) > bandwidth_hz[e]],
                  ordered=True)
    m.band = pyo.Constraint(m.B, rule=lambda m, e: sum(band[u, e] / bandwidth_hz[e] * m.x[u, e, k]
                                                        for u, e, k in direct_at[e]) <= m.mode[e, DIRECT])
    m.obj = pyo.Objective(expr=sum(fixed[k] * m.mode[k] for k in modes) + sum(cost[j] * m.x[j] for j in joins),
                          sense=pyo.minimize)

    def decode(model) -> dict:
        assoc = np.full(n, -1, dtype=np.int64)
        for u, e, k in joins:
            if (model.x[u, e, k].value or 0.0) > 0.5:
                assoc[u] = e
        return {"association": assoc}

    def encode(model, warm: dict) -> None:
        raise ValueError("the association relaxation takes no warm start")

    precheck = None if all(of_dev) else "a device has no candidate edge where any role meets the budget"
    return MilpModel(name=m.name, model=m, decoder=decode, encoder=encode, build_s=time.perf_counter() - t0,
                     precheck_message=precheck, data={"modes": modes, "joins": joins},
                     families={"assign": "each device joins one open candidate edge in a role its mode allows",
                               "needs_mode": "a device joins an edge in the mode the edge is open in",
                               "one_mode": "an edge is closed, direct, or one relay tree in one D2D component",
                               "band": "a direct cluster's members' least bands fit the edge's band"})


def build_edge_cover(candidates: np.ndarray, open_cost: np.ndarray) -> MilpModel:
    """Least ``sum open_cost[e] y[e]`` (J) over open edges ``y`` with every device among some open candidate
    edge (``candidates`` (U, E) bool). ``decode`` -> {"open": (E,) bool}."""
    t0 = time.perf_counter()
    n, n_e = candidates.shape
    m = pyo.ConcreteModel(name=f"edge cover ({n} devices x {n_e} edges)")
    m.E = pyo.RangeSet(0, n_e - 1)
    m.y = pyo.Var(m.E, domain=pyo.Binary)
    rows = {tuple(np.flatnonzero(c)) for c in candidates}  # devices with the same candidates give one row
    m.R = pyo.Set(initialize=sorted(rows), dimen=None, ordered=True)
    m.cover = pyo.Constraint(m.R, rule=lambda m, *edges: sum(m.y[e] for e in edges) >= 1)
    m.obj = pyo.Objective(expr=sum(float(open_cost[e]) * m.y[e] for e in range(n_e)), sense=pyo.minimize)

    def decode(model) -> dict:
        return {"open": np.array([(model.y[e].value or 0.0) > 0.5 for e in range(n_e)])}

    def encode(model, warm: dict) -> None:
        for e in range(n_e):
            model.y[e].set_value(float(warm["open"][e]))

    precheck = None if candidates.any(axis=1).all() else "a device has no candidate edge"
    return MilpModel(name=m.name, model=m, decoder=decode, encoder=encode, build_s=time.perf_counter() - t0,
                     precheck_message=precheck,
                     families={"cover": "every device has an open candidate edge"})
