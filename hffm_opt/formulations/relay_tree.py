"""F2: the D2D aggregator and relay tree of ONE cluster as a MILP (section 4 of the design).

Nodes are the cluster's devices in local indices ``0..n-1``. Times in seconds, energies in joules.

Data (all (n, n) arrays are indexed ``[sender, receiver]``):

- ``up_latency[u, v]`` / ``up_energy[u, v]``: time / energy for u to send its subtree's aggregated update to v;
- ``down_latency[v, u]`` / ``down_energy[v, u]``: time / energy for v to send the aggregate down to u;
- ``compute_s[u]``: u's local training time before it can send; ``allowed[u, v]``: u may relay to v (a D2D link
  in range; the arc also needs finite up data for u -> v and finite down data for v -> u);
- ``root_candidates[u]``: u may be the aggregator (None = any node); ``w_T`` (1/s) and ``w_E`` (1/J) weights.

Program (A = usable arcs, C = root candidates, n nodes):

- variables: ``r[u]`` binary, u in C (u is the aggregator); ``y[u,v]`` binary, (u,v) in A (u's parent is v: u sends
  its subtree's aggregate to v, v broadcasts back to u); ``f[u,v] >= 0`` flow; ``d[u]`` in [compute_s[u], Dmax_u]
  the time u holds its subtree's aggregate; ``q[u]`` in [0, Qmax_u] the time u holds the broadcast aggregate;
  ``L_up``, ``L_down >= 0``;
- ``one_root``: sum_u r[u] = 1;
- ``out[u]``: sum_v y[u,v] + r[u] = 1 (a non-root node has exactly one parent, the root none);
- ``balance[u]``: sum_v f[u,v] - sum_w f[w,u] = 1 - n r[u] (each node sends one unit of flow that ends at the
  root, so every node reaches the root: the chosen arcs form an arborescence into it);
- ``cap[u,v]``: f[u,v] <= (n - 1) y[u,v]; ``no2cycle[u,v]`` (u < v): y[u,v] + y[v,u] <= 1 (a valid cut);
- ``up_pot[u,v]``: d[v] >= d[u] + up_latency[u,v] - M_uv (1 - y[u,v]), with the tight
  M_uv = Dmax_u + up_latency[u,v] - compute_s[v] (in-network aggregation: v holds its subtree's aggregate only
  after every child's has arrived; the critical path is the longest leaf-to-root path of compute + hops);
- ``down_pot[u,v]``: q[u] >= q[v] + down_latency[v,u] - N_uv (1 - y[u,v]), N_uv = Qmax_v + down_latency[v,u]
  (the broadcast goes down the same tree reversed, parent v -> child u);
- ``lup[u]``: L_up >= d[u] + sum_v up_latency[u,v] y[u,v] (u's aggregate, then its hop, reaches the root by L_up;
  implies L_up >= d[u]); ``ldown[u]``: L_down >= q[u]; ``first_hop[u]``: q[u] >= sum_v down_latency[v,u] y[u,v];
- objective: minimise w_T (L_up + L_down) + w_E sum_(u,v) (up_energy[u,v] + down_energy[v,u]) y[u,v].

Bounds: Dmax_u = max_w compute_s[w] + sum_(w != u) max_v up_latency[w,v] and Qmax_u = sum_w max_v
down_latency[v,w] bound the least potentials of any tree (a path visits each node once), so they cut off no
tree. With ``tighten`` (default) the builder also prices shortest-path trees into every root candidate
(:func:`heuristic_tree`); the best one, of objective z, is the model's ``default_start`` and caps the latencies
of any tree at least as good: L_up <= (z - w_E E_lb) / w_T - L_down_lb and L_down <= (z - w_E E_lb) / w_T - L_up_lb
(E_lb: every non-root node's cheapest arc; L_up_lb = max compute_s; L_down_lb: the second largest cheapest
incoming broadcast hop), so Dmax and Qmax, hence every M_uv and N_uv, shrink to the latencies that can still be
optimal. ``decode`` -> {"root": int, "parent": (n,) int, -1 at the root}.
"""

from __future__ import annotations

import time

import numpy as np
import pyomo.environ as pyo
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra, shortest_path

from .milp_model import MilpModel


def _square(name: str, a, n: int) -> np.ndarray:
    arr = np.asarray(a, dtype=float)
    if arr.shape != (n, n):
        raise ValueError(f"{name}.shape = {arr.shape}: must be ({n}, {n}) like compute_s")
    return arr


def usable_arcs(up_latency, up_energy, down_latency, down_energy, allowed) -> np.ndarray:
    """(n, n) bool: arcs u -> v (u's parent v) that are allowed, off the diagonal, with finite non-negative
    up data for u -> v and down data for v -> u."""
    ok = np.asarray(allowed, bool).copy()
    np.fill_diagonal(ok, False)
    for arr in (up_latency, up_energy, down_latency.T, down_energy.T):
        with np.errstate(invalid="ignore"):
            ok &= np.isfinite(arr) & (arr >= 0)
    return ok


def tree_cost(parent: np.ndarray, up_latency, up_energy, down_latency, down_energy, compute_s, w_T: float,
              w_E: float) -> tuple[float, float, float]:
    """(objective, L_up, L_down) of a rooted tree given by ``parent`` (local indices, -1 at the root)."""
    n = len(parent)
    order = _depth_order(parent)
    d = np.asarray(compute_s, dtype=float).copy()
    for u in order[::-1]:
        p = parent[u]
        if p >= 0:
            d[p] = max(d[p], d[u] + up_latency[u, p])
    q = np.zeros(n)
    for u in order:
        p = parent[u]
        if p >= 0:
            q[u] = q[p] + down_latency[p, u]
    child = np.flatnonzero(parent >= 0)
    energy = float((up_energy[child, parent[child]] + down_energy[parent[child], child]).sum())
    root = int(np.flatnonzero(parent < 0)[0])
    l_up, l_down = float(d[root]), float(q.max(initial=0.0))
    return w_T * (l_up + l_down) + w_E * energy, l_up, l_down


def _depth_order(parent: np.ndarray) -> np.ndarray:
    """Nodes ordered root first, then by depth; raises ValueError unless ``parent`` is one rooted tree."""
    parent = np.asarray(parent, dtype=np.int64)
    n = len(parent)
    roots = np.flatnonzero(parent < 0)
    if len(roots) != 1:
        raise ValueError(f"parent = {parent.tolist()}: a tree has exactly one root (parent -1), found {len(roots)}")
    if ((parent >= n) | (parent == np.arange(n))).any():
        raise ValueError(f"parent = {parent.tolist()}: parents must be other nodes' indices in [0, {n})")
    depth = np.full(n, -1)
    depth[roots[0]] = 0
    for _ in range(n):
        todo = (depth < 0) & (depth[np.maximum(parent, 0)] >= 0) & (parent >= 0)
        if not todo.any():
            break
        depth[todo] = depth[parent[todo]] + 1
    if (depth < 0).any():
        raise ValueError(f"parent = {parent.tolist()}: nodes {np.flatnonzero(depth < 0).tolist()} do not reach the root "
                         "(a cycle)")
    return np.argsort(depth, kind="stable")


def heuristic_tree(up_latency, up_energy, down_latency, down_energy, compute_s, w_T: float, w_E: float,
                   arcs: np.ndarray, root_candidates: np.ndarray) -> tuple[np.ndarray | None, float]:
    """Best shortest-path tree into any root candidate, under four arc weights (up latency, down latency, their
    sum, energy); returns (parent (n,) or None if no candidate is reachable from every node, its objective)."""
    n = len(compute_s)
    cand = np.flatnonzero(root_candidates)
    if n == 1:
        if not cand.size:
            return None, np.inf
        one = np.array([-1])
        return one, tree_cost(one, up_latency, up_energy, down_latency, down_energy, compute_s, w_T, w_E)[0]
    src, dst = np.nonzero(arcs)
    weights = (up_latency[src, dst], down_latency[dst, src], up_latency[src, dst] + down_latency[dst, src],
               up_energy[src, dst] + down_energy[dst, src])
    best, best_cost = None, np.inf
    for w in weights:
        w = np.asarray(w, dtype=float)
        w = w + 1e-12 * max(float(w.max(initial=0.0)), 1e-12)  # explicit positive weights: zero is no edge
        graph_t = csr_matrix((w, (dst, src)), shape=(n, n))  # reversed: paths from the root to every node
        dist, pred = dijkstra(graph_t, directed=True, indices=cand, return_predecessors=True)
        for i, root in enumerate(cand):
            if not np.isfinite(dist[i]).all():
                continue
            parent = np.where(pred[i] < 0, -1, pred[i]).astype(np.int64)
            parent[root] = -1
            cost = tree_cost(parent, up_latency, up_energy, down_latency, down_energy, compute_s, w_T, w_E)[0]
            if cost < best_cost:
                best, best_cost = parent, cost
    return best, best_cost


def _latency_caps(incumbent: float, arcs, cand, up_energy, down_latency, down_energy, compute_s, w_T, w_E):
    """Upper bounds on L_up and L_down of any tree no worse than ``incumbent`` (valid: they keep every optimum)."""
    n = len(compute_s)
    z = incumbent * (1 + 1e-9) + 1e-12
    cost = np.where(arcs, up_energy + down_energy.T, np.inf)
    min_out = np.sort(cost.min(axis=1))
    e_lb = float(min_out[: n - 1].sum()) if n > 1 else 0.0  # every node but the root sends on one arc
    min_in = np.sort(np.where(arcs, down_latency.T, np.inf).min(axis=1))
    down_lb = float(min_in[-2]) if n > 1 and np.isfinite(min_in[-2]) else 0.0  # all receive but the root
    up_lb = float(compute_s.max())
    budget = (z - w_E * e_lb) / w_T
    return budget - down_lb, budget - up_lb


def _precheck(arcs: np.ndarray, cand: np.ndarray, names: list[str]) -> str | None:
    n = len(cand)
    if not cand.any():
        return "F2 infeasible: no node may be the aggregator (root_candidates is all False)"
    stuck = np.flatnonzero(~arcs.any(axis=1) & ~cand)
    if stuck.size:
        return ("F2 infeasible: out (each non-root node needs a parent): "
                + ", ".join(names[u] for u in stuck) + " has no usable D2D link and may not be the aggregator")
    if n == 1:
        return None
    reach = np.isfinite(shortest_path(arcs.astype(float), unweighted=True, directed=True))
    roots_ok = cand & reach.all(axis=0)
    if not roots_ok.any():
        best = int(np.argmax(np.where(cand, reach.sum(axis=0), -1)))
        cut = np.flatnonzero(~reach[:, best])
        return ("F2 infeasible: balance (every node must reach the aggregator): no root candidate is reachable from "
                f"every node; e.g. {', '.join(names[u] for u in cut)} cannot reach {names[best]}")
    return None


def build_relay_tree(up_latency, up_energy, down_latency, down_energy, compute_s, w_T: float = 1.0,
                     w_E: float = 0.0, allowed=None, root_candidates=None, *, node_ids=None,
                     tighten: bool = True, name: str = "") -> MilpModel:
    """F2 for one cluster of ``n`` nodes (see the module docstring for the program). Times s, energies J.

    ``allowed`` (n, n) bool (None = every arc with finite data); ``root_candidates`` (n,) bool or None (any);
    ``node_ids`` (n,) device ids used in messages (default: local indices). Returns a :class:`MilpModel` whose
    ``decode`` gives {"root": int, "parent": (n,) int (-1 at the root)} in local indices and whose ``encode``
    takes the same dict. ``tighten`` caps the potentials with the heuristic tree's objective (module docstring).
    ``data`` holds ``arcs`` (n, n) bool, ``d_max`` and ``q_max`` (n,), ``heuristic_parent`` and
    ``heuristic_objective``; ``default_start`` is the heuristic tree (None when the pre-check finds no tree).
    """
    t0 = time.perf_counter()
    compute_s = np.asarray(compute_s, dtype=float)
    if compute_s.ndim != 1 or not np.isfinite(compute_s).all() or (compute_s < 0).any():
        raise ValueError(f"compute_s = {compute_s.tolist()}: must be a 1-D array of finite times >= 0 s")
    n = len(compute_s)
    if n == 0:
        raise ValueError("compute_s = []: a cluster needs at least one node")
    up_lat, up_en = _square("up_latency", up_latency, n), _square("up_energy", up_energy, n)
    dn_lat, dn_en = _square("down_latency", down_latency, n), _square("down_energy", down_energy, n)
    for wname, w in (("w_T", w_T), ("w_E", w_E)):
        if not (np.isfinite(w) and w >= 0):
            raise ValueError(f"{wname} = {w!r}: must be finite and >= 0")
    allowed = np.ones((n, n), bool) if allowed is None else np.asarray(allowed, bool)
    if allowed.shape != (n, n):
        raise ValueError(f"allowed.shape = {allowed.shape}: must be ({n}, {n})")
    cand = np.ones(n, bool) if root_candidates is None else np.asarray(root_candidates, bool)
    if cand.shape != (n,):
        raise ValueError(f"root_candidates.shape = {cand.shape}: must be ({n},)")
    ids = np.arange(n) if node_ids is None else np.asarray(node_ids)
    names = [f"node {u}" if node_ids is None else f"device id {ids[u]}" for u in range(n)]

    arcs = usable_arcs(up_lat, up_en, dn_lat, dn_en, allowed)
    src, dst = np.nonzero(arcs)
    # tight bounds of the potentials (vectorised)
    max_out_up = np.where(arcs, up_lat, 0.0).max(axis=1, initial=0.0)
    d_max = compute_s.max() + max_out_up.sum() - max_out_up
    max_in_down = np.where(arcs, dn_lat.T, 0.0).max(axis=1, initial=0.0)
    q_max = np.full(n, max_in_down.sum())
    arc_cost = up_en[src, dst] + dn_en[dst, src]
    precheck = _precheck(arcs, cand, names)
    start, start_cost = (None, np.inf) if precheck else heuristic_tree(up_lat, up_en, dn_lat, dn_en, compute_s, w_T, w_E,
                                                                       arcs, cand)
    if tighten and start is not None and w_T > 0:
        d_cap, q_cap = _latency_caps(start_cost, arcs, cand, up_en, dn_lat, dn_en, compute_s, w_T, w_E)
        d_max = np.maximum(np.minimum(d_max, d_cap), compute_s)
        q_max = np.maximum(np.minimum(q_max, q_cap), 0.0)
    big_up = d_max[src] + up_lat[src, dst] - compute_s[dst]
    big_down = q_max[dst] + dn_lat[dst, src]

    m = pyo.ConcreteModel(name=name or f"F2 relay tree (n={n})")
    arc_list = list(zip(src.tolist(), dst.tolist()))
    pos = {a: i for i, a in enumerate(arc_list)}
    cand_list = np.flatnonzero(cand).tolist()
    m.A = pyo.Set(initialize=arc_list, dimen=2, ordered=True)
    m.N = pyo.RangeSet(0, n - 1)
    m.C = pyo.Set(initialize=cand_list, ordered=True)
    m.r = pyo.Var(m.C, domain=pyo.Binary)
    m.y = pyo.Var(m.A, domain=pyo.Binary)
    m.f = pyo.Var(m.A, bounds=(0, n - 1))
    m.d = pyo.Var(m.N, bounds=lambda _, u: (compute_s[u], d_max[u]))
    m.q = pyo.Var(m.N, bounds=lambda _, u: (0.0, q_max[u]))
    m.L_up = pyo.Var(bounds=(0.0, float(d_max.max())))
    m.L_down = pyo.Var(bounds=(0.0, float(q_max.max())))
    # a node with no usable arc that may not be the root cannot satisfy ``out``: a variable fixed to 0 keeps
    # that constraint well-formed, the solver then proves the infeasibility
    orphan = [u for u in range(n) if not arcs[u].any() and not cand[u]]
    m.orphan = pyo.Set(initialize=orphan)
    m.no_option = pyo.Var(m.orphan, bounds=(0, 0))

    out_arcs = [[] for _ in range(n)]
    in_arcs = [[] for _ in range(n)]
    for (u, v) in arc_list:
        out_arcs[u].append((u, v))
        in_arcs[v].append((u, v))

    if cand_list:
        m.one_root = pyo.Constraint(expr=sum(m.r[u] for u in cand_list) == 1)
    else:  # no candidate: a variable fixed to 0 keeps the row well-formed, the solver proves the infeasibility
        m.no_candidate = pyo.Var(bounds=(0, 0))
        m.one_root = pyo.Constraint(expr=m.no_candidate == 1)

    def out_rule(m, u):
        terms = [m.y[a] for a in out_arcs[u]] + ([m.r[u]] if cand[u] else []) + ([m.no_option[u]] if u in m.orphan else [])
        return sum(terms) == 1

    m.out = pyo.Constraint(m.N, rule=out_rule)

    def balance_rule(m, u):
        flow = sum(m.f[a] for a in out_arcs[u]) - sum(m.f[a] for a in in_arcs[u])
        if not out_arcs[u] and not in_arcs[u] and not cand[u]:
            return pyo.Constraint.Skip
        if not out_arcs[u] and not in_arcs[u]:
            return n * m.r[u] == 1  # an isolated candidate: feasible only for a one-node cluster
        return flow == 1 - (n * m.r[u] if cand[u] else 0)

    m.balance = pyo.Constraint(m.N, rule=balance_rule)
    m.cap = pyo.Constraint(m.A, rule=lambda m, u, v: m.f[u, v] <= (n - 1) * m.y[u, v])
    pairs = [(u, v) for (u, v) in arc_list if u < v and arcs[v, u]]
    m.P = pyo.Set(initialize=pairs, dimen=2)
    m.no2cycle = pyo.Constraint(m.P, rule=lambda m, u, v: m.y[u, v] + m.y[v, u] <= 1)
    m.up_pot = pyo.Constraint(m.A, rule=lambda m, u, v: m.d[v] - m.d[u] - big_up[pos[u, v]] * m.y[u, v]
                              >= up_lat[u, v] - big_up[pos[u, v]])
    m.down_pot = pyo.Constraint(m.A, rule=lambda m, u, v: m.q[u] - m.q[v] - big_down[pos[u, v]] * m.y[u, v]
                                >= dn_lat[v, u] - big_down[pos[u, v]])
    m.lup = pyo.Constraint(m.N, rule=lambda m, u: m.L_up - m.d[u] - sum(up_lat[a] * m.y[a] for a in out_arcs[u]) >= 0)
    m.ldown = pyo.Constraint(m.N, rule=lambda m, u: m.L_down - m.q[u] >= 0)

    def first_hop_rule(m, u):
        if not out_arcs[u]:
            return pyo.Constraint.Skip
        return m.q[u] - sum(dn_lat[v, w] * m.y[w, v] for (w, v) in out_arcs[u]) >= 0

    m.first_hop = pyo.Constraint(m.N, rule=first_hop_rule)
    m.obj = pyo.Objective(expr=w_T * (m.L_up + m.L_down) + w_E * sum(arc_cost[i] * m.y[a] for i, a in enumerate(arc_list)),
                          sense=pyo.minimize)

    def decode(model) -> dict:
        parent = np.full(n, -1, dtype=np.int64)
        for (u, v) in arc_list:
            if (model.y[u, v].value or 0.0) > 0.5:
                parent[u] = v
        if not cand_list:
            return {"root": -1, "parent": parent}
        r_val = np.array([model.r[u].value or 0.0 for u in cand_list])
        root = int(cand_list[int(np.argmax(r_val))])
        parent[root] = -1
        return {"root": root, "parent": parent}

    def encode(model, warm: dict) -> None:
        parent = np.asarray(warm["parent"], dtype=np.int64)
        if parent.shape != (n,):
            raise ValueError(f"warm['parent'].shape = {parent.shape}: must be ({n},)")
        order = _depth_order(parent)
        root = int(order[0])
        if "root" in warm and int(warm["root"]) != root:
            raise ValueError(f"warm['root'] = {warm['root']}: the parent array's root is {root}")
        if not cand[root]:
            raise ValueError(f"warm root = {root}: not a root candidate")
        child = np.flatnonzero(parent >= 0)
        bad = child[~arcs[child, parent[child]]]
        if bad.size:
            raise ValueError(f"warm parent: arcs {[(int(u), int(parent[u])) for u in bad]} are not usable")
        size = np.ones(n)
        d = compute_s.copy()
        for u in order[::-1]:
            p = parent[u]
            if p >= 0:
                size[p] += size[u]
                d[p] = max(d[p], d[u] + up_lat[u, p])
        q = np.zeros(n)
        for u in order:
            if parent[u] >= 0:
                q[u] = q[parent[u]] + dn_lat[parent[u], u]
        for u in cand_list:
            model.r[u].set_value(1.0 if u == root else 0.0)
        for (u, v) in arc_list:
            on = parent[u] == v
            model.y[u, v].set_value(1.0 if on else 0.0)
            model.f[u, v].set_value(float(size[u]) if on else 0.0)
        for u in range(n):
            model.d[u].set_value(float(d[u]))
            model.q[u].set_value(float(q[u]))
        for u in orphan:
            model.no_option[u].set_value(0.0)
        model.L_up.set_value(float(d[root]))
        model.L_down.set_value(float(q.max(initial=0.0)))

    node_label = names.__getitem__
    arc_label = lambda idx: f"{names[idx[0]]} -> {names[idx[1]]}"  # noqa: E731
    families = {
        "one_root": "exactly one aggregator", "out": "a non-root node has exactly one parent, the root none",
        "balance": "flow conservation: every node must reach the aggregator",
        "cap": "flow only on chosen arcs", "no2cycle": "no two-node cycle", "up_pot": "upward critical-path potential",
        "down_pot": "broadcast critical-path potential", "lup": "up latency bound", "ldown": "down latency bound",
        "first_hop": "broadcast reaches a node after its last hop", "no_option": "node without a usable D2D link",
        "no_candidate": "no node may be the aggregator",
        "r": "root choice", "y": "arc choice", "d": "up potential bounds", "q": "down potential bounds",
    }
    labels = {k: node_label for k in ("out", "balance", "lup", "ldown", "first_hop", "no_option", "r", "d", "q")}
    labels |= {k: arc_label for k in ("cap", "no2cycle", "up_pot", "down_pot", "y", "f")}
    default_start = None if start is None else {"root": int(np.flatnonzero(start < 0)[0]), "parent": start}
    return MilpModel(name=m.name, model=m, decoder=decode, encoder=encode, build_s=time.perf_counter() - t0,
                     precheck_message=precheck, families=families, labels=labels, default_start=default_start,
                     data={"arcs": arcs, "d_max": d_max, "q_max": q_max, "heuristic_parent": start,
                           "heuristic_objective": start_cost})
