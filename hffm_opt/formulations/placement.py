"""F1: which modules each device trains and at which tier each cluster aggregates them (MILP, section 4).

Units: s, J, bit/s, FLOP/s, bytes. Indices: device ``u``, module ``k``, edge (cluster) ``e``, tier
``l`` in (0 aggregator device, 1 edge, 2 cloud) as in :data:`hffm_opt.plan.TIERS`.

Data (vectorised over devices):

- Cand(u) = trainable modules in Need(u); the cluster of u is ``association[u]`` (default: its home edge);
- per edge round device u computes ``tau * min(batch, n_u) * phi_k`` FLOP for module k at ``F_u`` FLOP/s:
  ``c[u,k]`` seconds, and uploads ``s_k`` bits at the given rate ``r_u``: ``s_k / r_u`` seconds;
- energy ``e[u,k] = p_u s_k / r_u + kappa_u C_uk f_u^2`` with ``C_uk`` = FLOP / flops_per_cycle cycles at
  ``f_u = F_u / flops_per_cycle`` Hz (as the evaluator prices it);
- value ``v[u,k] = n_{u,k} / N``: the device's samples relevant to the module (its samples of the module's task for
  prompts and heads, all its samples for shared modules) over all samples N of the scenario; a cluster's weight of a
  module ``w[e,k] = sum_{u in U_e} v[u,k]``;
- memory ``base_u = sum_{k in Need(u)} mu_k`` (everything it runs is held) and ``extra_k`` = train_memory_bytes.

Program:

- variables: ``x[u,k]`` binary for k in Cand(u); ``z[k,e,l]`` binary for modules present in cluster e (some member
  needs and may train it) and tiers l allowed there (aggregator only in ``d2d_clusters``, never the cloud for a
  cluster-local module); ``T >= 0`` (upper bound ``deadline_s`` when given);
- ``memory[u]``: sum_k extra_k x[u,k] <= Mem_u - base_u (MB; written only where training everything could exceed it);
- ``makespan[u]``: T >= sum_k (c[u,k] + s_k / r_u) x[u,k];
- ``coverage[e,k]``: sum_{u in U_e} x[u,k] >= min(q, #members that need k) (skipped for q = 0);
- ``one_tier[k,e]``: sum_l z[k,e,l] = 1;
- objective: minimise w_T T + w_E sum e[u,k] x[u,k] - w_U (sum v[u,k] x[u,k] + sum tier_value[l] w[e,k] z[k,e,l]).

Linear, no big-M. ``decode`` -> {"train": (U, K) bool, "tier": (E, K) int8}; modules absent from a cluster get
the cloud tier (the edge for cluster-local ones).
"""

from __future__ import annotations

import time

import numpy as np
import pyomo.environ as pyo

from ..network.scenario import SHARED_KINDS, Scenario
from .milp_model import MilpModel

TIER_VALUE = (0.0, 0.05, 0.1)  # utility per unit of sample share aggregated at (aggregator, edge, cloud)
AGG, EDGE, CLOUD = 0, 1, 2
_MB = 1e6  # memory rows in MB: solver tolerances of 1e-7 are then a tenth of a byte


def _per_device(name: str, value, n: int) -> np.ndarray:
    arr = np.broadcast_to(np.asarray(value, dtype=float), (n,)).copy()
    if not (np.isfinite(arr).all() and (arr > 0).all()):
        bad = int(np.flatnonzero(~(np.isfinite(arr) & (arr > 0)))[0])
        raise ValueError(f"{name}[{bad}] = {arr[bad]!r}: must be finite and > 0")
    return arr


def placement_data(scenario: Scenario, rate_bps, *, flops_per_s=None, power_w=None, association=None,
                   local_steps: int = 1, batch_size: int = 16) -> dict:
    """F1's coefficient arrays (vectorised over devices): ``cand`` (U, K) bool, ``time`` (U, K) s (compute +
    upload per round), ``energy`` (U, K) J, ``value`` (U, K), ``mem_free`` (U,) bytes left for training state,
    ``extra`` (K,) bytes, ``association`` (U,), ``need_count`` (E, K) and ``weight`` (E, K) per cluster."""
    dev, mods = scenario.devices, scenario.module_arrays
    n, n_e = scenario.n_devices, scenario.n_edges
    rate = _per_device("rate_bps", rate_bps, n)
    flops = _per_device("flops_per_s", dev.flops_max if flops_per_s is None else flops_per_s, n)
    power = np.broadcast_to(np.asarray(dev.pmax_w if power_w is None else power_w, dtype=float), (n,))
    assoc = np.asarray(dev.edge if association is None else association, dtype=np.int64)
    if assoc.shape != (n,) or (assoc < 0).any() or (assoc >= n_e).any():
        raise ValueError(f"association = {assoc.tolist()}: must be ({n},) edge indices in [0, {n_e})")
    cand = scenario.need & mods["trainable"][None, :]
    samples = dev.samples
    n_u = samples.sum(axis=1)
    batch = np.minimum(batch_size, n_u).astype(float)
    flop = local_steps * batch[:, None] * mods["flops_per_sample"][None, :]  # (U, K) per round
    t_comp = flop / flops[:, None]
    t_up = mods["update_bits"][None, :] / rate[:, None]
    f_hz = flops / dev.flops_per_cycle
    e_comp = dev.kappa[:, None] * (flop / dev.flops_per_cycle[:, None]) * f_hz[:, None] ** 2
    energy = power[:, None] * t_up + e_comp
    task_of = np.array([scenario.tasks.index(m.key) if m.kind in ("prompt", "head") else -1 for m in scenario.modules])
    rel = np.where(task_of[None, :] >= 0, samples[:, np.maximum(task_of, 0)], n_u[:, None]).astype(float)
    value = np.where(cand, rel / max(float(samples.sum()), 1.0), 0.0)
    held = scenario.need @ mods["memory_bytes"]
    need_count = np.zeros((n_e, len(scenario.modules)), np.int64)
    np.add.at(need_count, assoc, cand.astype(np.int64))
    weight = np.zeros((n_e, len(scenario.modules)))
    np.add.at(weight, assoc, value)
    return {"cand": cand, "time": np.where(cand, t_comp + t_up, 0.0), "energy": np.where(cand, energy, 0.0),
            "value": value, "mem_free": dev.memory_bytes - held, "extra": mods["train_memory_bytes"].copy(),
            "association": assoc, "need_count": need_count, "weight": weight, "shared": np.array(
                [m.kind in SHARED_KINDS for m in scenario.modules])}


def build_placement(scenario: Scenario, rate_bps, *, flops_per_s=None, power_w=None, association=None,
                    d2d_clusters=None, deadline_s: float | None = None, w_T: float = 1.0, w_E: float = 1.0,
                    w_U: float = 1.0, coverage: int = 1, tier_value=TIER_VALUE, local_steps: int = 1,
                    batch_size: int = 16) -> MilpModel:
    """F1 for ``scenario`` (program in the module docstring).

    ``rate_bps`` (U,) or scalar uplink rate r_u (bit/s) of the current allocation; ``flops_per_s`` (U,) compute
    speed used (default the devices' max); ``power_w`` (U,) upload power (default Pmax); ``association`` (U,)
    (default home edges); ``d2d_clusters`` (E,) bool where the aggregator tier is allowed (default none);
    ``deadline_s`` caps T (None = T free); weights ``w_T`` (1/s), ``w_E`` (1/J), ``w_U``; ``coverage`` q;
    ``tier_value`` (aggregator, edge, cloud) utility per unit of a cluster's sample share of a module;
    ``local_steps`` tau and ``batch_size`` as in the plan.
    """
    t0 = time.perf_counter()
    for wname, w in (("w_T", w_T), ("w_E", w_E), ("w_U", w_U)):
        if not (np.isfinite(w) and w >= 0):
            raise ValueError(f"{wname} = {w!r}: must be finite and >= 0")
    if int(coverage) != coverage or coverage < 0:
        raise ValueError(f"coverage = {coverage!r}: must be an integer >= 0")
    if deadline_s is not None and not (deadline_s > 0 and np.isfinite(deadline_s)):
        raise ValueError(f"deadline_s = {deadline_s!r}: must be a finite number of seconds > 0, or None")
    tier_value = np.asarray(tier_value, dtype=float)
    if tier_value.shape != (3,) or not np.isfinite(tier_value).all():
        raise ValueError(f"tier_value = {tier_value.tolist()}: three finite values (aggregator, edge, cloud)")
    n, n_e, n_k = scenario.n_devices, scenario.n_edges, len(scenario.modules)
    d2d = np.zeros(n_e, bool) if d2d_clusters is None else np.asarray(d2d_clusters, bool)
    if d2d.shape != (n_e,):
        raise ValueError(f"d2d_clusters.shape = {d2d.shape}: must be ({n_e},)")
    data = placement_data(scenario, rate_bps, flops_per_s=flops_per_s, power_w=power_w, association=association,
                          local_steps=local_steps, batch_size=batch_size)
    cand, t_uk, e_uk, v_uk = data["cand"], data["time"], data["energy"], data["value"]
    mem_free, extra, assoc = data["mem_free"], data["extra"], data["association"]
    need_count, weight = data["need_count"], data["weight"]
    local = scenario.module_arrays["cluster_local"]
    dev_ids, edge_ids, mod_names = scenario.devices.ids, scenario.edges.ids, scenario.module_names

    # which device could train which module at all (memory alone; deadline alone): the pre-check
    capable = cand & (extra[None, :] <= mem_free[:, None])
    if deadline_s is not None:
        capable &= t_uk <= deadline_s
    need_cov = np.minimum(coverage, need_count)
    can_cov = np.zeros((n_e, n_k), np.int64)
    np.add.at(can_cov, assoc, capable.astype(np.int64))
    problems = []
    full = np.flatnonzero(mem_free < 0)
    for u in full[:5]:
        problems.append(f"memory: device id {dev_ids[u]} needs {-mem_free[u] / 1e9:.3g} GB more than its memory "
                        "just to hold the modules it runs")
    if len(full) > 5:
        problems.append(f"memory: and devices ids {dev_ids[full[5:]].tolist()}")
    short_e, short_k = np.nonzero(can_cov < need_cov)
    for e, k in zip(short_e[:5], short_k[:5]):
        problems.append(f"coverage: module {mod_names[k]} in the cluster of edge id {edge_ids[e]} must be trained by "
                        f"{need_cov[e, k]} devices but only {can_cov[e, k]} can hold its training state"
                        + ("" if deadline_s is None else " and meet the deadline"))
    if len(short_e) > 5:
        problems.append(f"coverage: and {len(short_e) - 5} more (module, cluster) pairs")
    precheck = ("F1 infeasible: " + "; ".join(problems)) if problems else None

    m = pyo.ConcreteModel(name=f"F1 placement ({scenario.name}, {n} devices)")
    uk = [(int(u), int(k)) for u, k in zip(*np.nonzero(cand))]
    present = need_count > 0
    kel = []
    for e, k in zip(*np.nonzero(present)):
        tiers = ([AGG] if d2d[e] else []) + [EDGE] + ([] if local[k] else [CLOUD])
        kel += [(int(k), int(e), l) for l in tiers]
    m.UK = pyo.Set(initialize=uk, dimen=2, ordered=True)
    m.KEL = pyo.Set(initialize=kel, dimen=3, ordered=True)
    m.x = pyo.Var(m.UK, domain=pyo.Binary)
    m.z = pyo.Var(m.KEL, domain=pyo.Binary)
    m.T = pyo.Var(bounds=(0.0, deadline_s))

    by_dev = [[] for _ in range(n)]
    for (u, k) in uk:
        by_dev[u].append(k)
    # memory rows only where training everything it may train could overflow (the others are redundant)
    tight = [u for u in range(n) if (extra[by_dev[u]].sum() if by_dev[u] else 0.0) > mem_free[u]]
    m.MEM = pyo.Set(initialize=tight, ordered=True)
    m.no_room = pyo.Var(pyo.Set(initialize=[u for u in tight if not by_dev[u]]), bounds=(0, 0))

    def memory_rule(m, u):
        lhs = sum(extra[k] / _MB * m.x[u, k] for k in by_dev[u]) if by_dev[u] else m.no_room[u]
        return lhs <= mem_free[u] / _MB

    m.memory = pyo.Constraint(m.MEM, rule=memory_rule)
    busy = [u for u in range(n) if by_dev[u]]
    m.BUSY = pyo.Set(initialize=busy, ordered=True)
    m.makespan = pyo.Constraint(m.BUSY, rule=lambda m, u: m.T - sum(t_uk[u, k] * m.x[u, k] for k in by_dev[u]) >= 0)

    members = [[] for _ in range(n_e)]
    for u in range(n):
        members[assoc[u]].append(u)
    ek = [(int(e), int(k)) for e, k in zip(*np.nonzero(present & (need_cov > 0)))]
    m.EK = pyo.Set(initialize=ek, dimen=2, ordered=True)
    m.coverage = pyo.Constraint(m.EK, rule=lambda m, e, k: sum(m.x[u, k] for u in members[e] if cand[u, k])
                                >= int(need_cov[e, k]))
    tiers_of = {}
    for (k, e, l) in kel:
        tiers_of.setdefault((k, e), []).append(l)
    m.KE = pyo.Set(initialize=list(tiers_of), dimen=2, ordered=True)
    m.one_tier = pyo.Constraint(m.KE, rule=lambda m, k, e: sum(m.z[k, e, l] for l in tiers_of[k, e]) == 1)
    m.obj = pyo.Objective(
        expr=w_T * m.T + sum((w_E * e_uk[u, k] - w_U * v_uk[u, k]) * m.x[u, k] for (u, k) in uk)
        - w_U * sum(tier_value[l] * weight[e, k] * m.z[k, e, l] for (k, e, l) in kel),
        sense=pyo.minimize)

    default_tier = np.where(local, EDGE, CLOUD).astype(np.int8)

    def decode(model) -> dict:
        train = np.zeros((n, n_k), bool)
        for (u, k) in uk:
            train[u, k] = (model.x[u, k].value or 0.0) > 0.5
        tier = np.tile(default_tier, (n_e, 1))
        for (k, e, l) in kel:
            if (model.z[k, e, l].value or 0.0) > 0.5:
                tier[e, k] = l
        return {"train": train, "tier": tier}

    def encode(model, warm: dict) -> None:
        train = np.asarray(warm["train"], bool)
        tier = np.asarray(warm["tier"], dtype=np.int64)
        if train.shape != (n, n_k) or tier.shape != (n_e, n_k):
            raise ValueError(f"warm train/tier shapes = {train.shape}, {tier.shape}: must be ({n}, {n_k}), ({n_e}, {n_k})")
        for (u, k) in uk:
            model.x[u, k].set_value(float(train[u, k]))
        for (k, e, l) in kel:
            model.z[k, e, l].set_value(float(tier[e, k] == l))
        for u in model.no_room:
            model.no_room[u].set_value(0.0)
        # may exceed deadline_s: an infeasible start is the solver's to discard, not an error
        model.T.set_value(float((np.where(cand & train, t_uk, 0.0)).sum(axis=1).max(initial=0.0)), skip_validation=True)

    families = {"memory": "modules held and trained fit the device memory",
                "makespan": "round time T covers every device's compute + upload",
                "coverage": "each needed module trained by enough devices of the cluster",
                "one_tier": "one aggregation tier per module and cluster", "no_room": "device without free memory",
                "T": "round deadline"}
    labels = {"memory": lambda u: f"device id {dev_ids[u]}", "makespan": lambda u: f"device id {dev_ids[u]}",
              "no_room": lambda u: f"device id {dev_ids[u]}",
              "coverage": lambda ek_: f"edge id {edge_ids[ek_[0]]}, module {mod_names[ek_[1]]}",
              "one_tier": lambda ke: f"module {mod_names[ke[0]]}, edge id {edge_ids[ke[1]]}",
              "x": lambda uk_: f"device id {dev_ids[uk_[0]]}, module {mod_names[uk_[1]]}"}
    data |= {"need_coverage": need_cov, "capable": capable}
    return MilpModel(name=m.name, model=m, decoder=decode, encoder=encode, build_s=time.perf_counter() - t0,
                     precheck_message=precheck, families=families, labels=labels, data=data)


# ---------------------------------------------------------------------- F1 inside F4
COVERAGES = ("full", "cluster")


def module_value(scenario: Scenario) -> np.ndarray:
    """(U, K) value of device u training module k (section 4's utility): its samples relevant to the module (of the
    module's task for prompts and heads, all its samples otherwise) over all samples of the scenario; 0 where k is
    not a trainable module of Need(u). A plan's utility is ``(module_value * train).sum()``."""
    samples = scenario.devices.samples
    n_u = samples.sum(axis=1)
    task_of = np.array([scenario.tasks.index(m.key) if m.kind in ("prompt", "head") else -1 for m in scenario.modules])
    rel = np.where(task_of[None, :] >= 0, samples[:, np.maximum(task_of, 0)], n_u[:, None]).astype(float)
    cand = scenario.need & scenario.module_arrays["trainable"][None, :]
    return np.where(cand, rel / max(float(samples.sum()), 1.0), 0.0)


def build_f4_placement(scenario: Scenario, plan, budget_s: float, *, edges=None, coverage: str = "full",
                       min_trainers: int = 1, w_U: float = 0.0, edge_ok=None) -> MilpModel:
    """F1 as F4's placement step: which modules each device of the clusters ``edges`` (default all) trains and
    whether each module of a cluster goes to the cloud, stays at the edge or, in a D2D cluster, stays at the
    aggregator, with ``plan``'s association, structures (direct or D2D relay tree) and continuous decisions (CPU
    speed, bandwidth, powers) fixed.

    With those fixed, :func:`hffm_opt.evaluate.evaluate`'s consistent accounting is linear in the decisions, and this
    program prices exactly what it prices (no deadline, no straggler), per cluster ``e`` with ``g = e_agg``:

    - device u computes ``sum_k a[u,k] x[u,k]`` s (``a`` = tau * batch * phi_k / flops_per_cycle / cpu_hz) at energy
      ``kappa C f^2``; a direct cluster's device uploads ``sum_k s_k x[u,k] / r_u`` s at its plan power, ``T_e >=``
      compute + upload; in a D2D cluster the link ``v -> parent(v)`` carries ``h[v,k] >= x[w,k]`` for every w of
      v's subtree (in-network aggregation; store-and-forward carries the subtree's sum), up phase ``U_e >=`` compute
      + the link times on u's path, down phase ``D_e >=`` the broadcast times on u's path (every module, at each
      link's broadcast power), and the aggregator uploads the bits aggregated at the edge or above
      ``sum_k s_k q[e,k]`` once a period (``y[e,k] >= x[u,k]`` trained in the cluster, ``q[e,k] >= y[e,k] -
      b[e,k]``, ``b`` = 1 at the aggregator tier);
    - aggregator tier (D2D clusters, modules with ``edge_ok``): in the last round the link ``v -> parent(v)``
      broadcasts ``l[v,k] >= x[w,k] + b[e,k] - 1`` (w in v's subtree) at its broadcast power (energy charged once),
      and the last round ends ``L_e >= max(0, max_w (the last broadcast times on w's path) - t_dl)`` later, ``t_dl``
      the edge downlink below;
    - backhaul (cloud-tier trained modules ``w[e,k] >= y[e,k] + c[e,k] - 1``, ``c`` = 1 at the cloud, ``c + b <=
      1``): ``delta_e o_e + sum_k s_k w[e,k] / R_e`` s, ``o_e >= w[e,k]``, at the backhaul power; the edge downlink
      (when the edge has a downlink power) ``t_dl = sum_k s_k q[e,k] / r_dl`` s, every round (direct) or once (D2D);
    - period ``g (T_e + t_dl) + t_bh`` (direct) or ``g U_e + (g - 1) D_e + t_agg + t_bh + t_dl + L_e`` (D2D)
      ``<= budget_s``.

    Coverage ``"full"``: x fixed to every trainable module of Need(u) (only tiers are decided; y, h = 1, q = 1 - b,
    l = b); ``"cluster"``: each module needed in a cluster is trained by at least ``min(min_trainers, members able
    to hold it)`` members, and every member that may train something trains at least one module (a member of a
    direct cluster always holds a band share). Tier: the edge, or the aggregator in a D2D cluster (the evaluator
    refuses it in a direct one), only for modules with ``edge_ok`` (K,) (default: the cluster-local ones, which
    never go to the cloud). Memory: held + training state fits. Objective: energy per edge round (J) minus ``w_U`` x
    utility (:func:`module_value`). ``decode`` -> {"train" (U, K), "tier" (E, K) (rows of other clusters as in
    ``plan``), "period_s" (E,), "energy_j" (E,) period figures of the decided clusters (nan elsewhere), "utility" of
    the decided clusters}; the figures are the period and energy expressions at the solution (phases as the max of
    their terms). Linear; the only big-M-like rows are the 0/1 products ``w``, ``q`` and ``l``, tight at an optimum
    since each costs energy (a slack product would make the figures disagree with ``evaluate``, never misprice a
    plan).
    """
    from ..network.channel import shannon_rate

    t0 = time.perf_counter()
    if coverage not in COVERAGES:
        raise ValueError(f"coverage = {coverage!r}: must be one of {list(COVERAGES)}")
    if not (np.isfinite(w_U) and w_U >= 0):
        raise ValueError(f"w_U = {w_U!r}: must be finite and >= 0")
    dev, mods, eds, n0 = scenario.devices, scenario.module_arrays, scenario.edges, scenario.noise_psd_w_per_hz
    n, n_e, g = scenario.n_devices, scenario.n_edges, int(plan.e_agg)
    local = mods["cluster_local"]
    edge_ok = local.copy() if edge_ok is None else (np.asarray(edge_ok, bool) | local)
    edges = list(range(n_e)) if edges is None else [int(e) for e in edges]
    a, s_k = plan.association, mods["update_bits"]
    cand = scenario.need & mods["trainable"][None, :]
    batch = np.minimum(plan.batch_size, dev.samples.sum(axis=1))
    cyc = plan.local_steps * batch[:, None] * mods["flops_per_sample"][None, :] / dev.flops_per_cycle[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        t_c = np.where(cyc > 0, cyc / plan.cpu_hz[:, None], 0.0)
        rate_up = shannon_rate(plan.bandwidth_hz, plan.power_w, dev.uplink_gain[np.arange(n), a], n0)
    e_c = dev.kappa[:, None] * cyc * plan.cpu_hz[:, None] ** 2
    value = module_value(scenario)
    mem_free = dev.memory_bytes - scenario.need @ mods["memory_bytes"]
    extra = mods["train_memory_bytes"]
    free_x = coverage == "cluster"

    m = pyo.ConcreteModel(name=f"F1 in F4 ({scenario.name}, {len(edges)} clusters)")
    chosen = np.isin(a, edges)
    uk = [(int(u), int(k)) for u, k in zip(*np.nonzero(cand & chosen[:, None]))] if free_x else []
    m.x = pyo.Var(pyo.Set(initialize=uk, dimen=2, ordered=True), domain=pyo.Binary)
    m.rows = pyo.ConstraintList()
    m.c = pyo.Var(pyo.Any, dense=False, domain=pyo.Binary)  # 1 = cloud tier
    m.b = pyo.Var(pyo.Any, dense=False, domain=pyo.Binary)  # 1 = aggregator tier
    m.r = pyo.Var(pyo.Any, dense=False, bounds=(0.0, None))  # continuous: y, w, q, o, h, l, T, U, D, L
    X = (lambda u, k: m.x[u, k]) if free_x else (lambda u, k: 1.0)
    figures, obj = {}, 0.0
    for e in edges:
        members = np.flatnonzero(a == e)
        if not len(members):
            continue
        ks = np.flatnonzero(cand[members].any(axis=0))
        has = {int(u): [int(k) for k in np.flatnonzero(cand[u])] for u in members}
        y = {}
        for k in ks:
            y[k] = m.r["y", e, k] if free_x else 1.0
            for u in members:
                if free_x and cand[u, k]:
                    m.rows.add(m.r["y", e, k] - m.x[u, k] >= 0)
        tree = plan.aggregator[e] >= 0
        kept = {int(k): m.b[e, int(k)] for k in ks if tree and edge_ok[k]}  # 1 = aggregator tier
        w = {}
        for k in ks:
            if local[k]:
                continue
            if not edge_ok[k]:
                w[k] = y[k]
            else:
                w[k] = m.r["w", e, k]
                m.rows.add(m.r["w", e, k] - y[k] - m.c[e, k] >= -1)
                if k in kept:
                    m.rows.add(m.c[e, k] + kept[k] <= 1)
        q = {}  # trained and aggregated at the edge or above
        for k in ks:
            if k not in kept:
                q[k] = y[k]
            elif free_x:
                q[k] = m.r["q", e, k]
                m.rows.add(q[k] - y[k] + kept[k] >= 0)
            else:
                q[k] = 1 - kept[k]
        o = 0.0
        if w:
            o = m.r["o", e] if any(not isinstance(v, float) for v in w.values()) else 1.0
            if not isinstance(o, float):
                for v in w.values():
                    m.rows.add(o - v >= 0)
        edge_bits = sum(s_k[k] * q[k] for k in ks)
        t_bh = eds.backhaul_delay_s[e] * o + sum(s_k[k] / eds.backhaul_rate_bps[e] * v for k, v in w.items())
        r_dl = shannon_rate(eds.bandwidth_hz[e], eds.downlink_power_w[e], dev.uplink_gain[members, e].min(), n0)
        t_dl = edge_bits / r_dl if r_dl > 0 else 0.0
        comp = {u: sum(t_c[u, k] * X(u, k) for k in has[u]) for u in has}
        e_comp = sum(e_c[u, k] * X(u, k) for u in has for k in has[u])
        if not tree:
            up = {u: sum(s_k[k] / rate_up[u] * X(u, k) for k in has[u]) if has[u] else 0.0 for u in has}
            terms = [comp[u] + up[u] for u in has]
            for term in terms:
                m.rows.add(m.r["T", e] - term >= 0)
            period = g * (m.r["T", e] + t_dl) + t_bh
            shape = {"up": terms, "down": [], "last": [], "dl": 0.0, "rest": g * t_dl + t_bh}
            energy = g * (e_comp + sum(plan.power_w[u] * up[u] for u in has)) + eds.backhaul_power_w[e] * t_bh \
                + g * eds.downlink_power_w[e] * t_dl
        else:
            period, energy, shape = _tree_rows(scenario, plan, m, e, members, has, comp, e_comp, X, edge_bits, kept,
                                               free_x, shannon_rate)
            for term in shape["last"]:  # the last round ends max(0, last broadcast - edge downlink) later
                m.rows.add(m.r["L", e] - term + t_dl >= 0)
            period = period + t_bh + t_dl + (m.r["L", e] if shape["last"] else 0.0)
            shape |= {"dl": t_dl, "rest": shape["rest"] + t_bh + t_dl}
            energy = energy + eds.backhaul_power_w[e] * t_bh + eds.downlink_power_w[e] * t_dl
        m.rows.add(period <= budget_s)
        figures[e] = (shape, energy, kept)
        obj = obj + energy / g
        if free_x:
            for k in ks:
                able = [u for u in members if cand[u, k] and extra[k] <= mem_free[u]]
                need = min(int(min_trainers), len(able))
                if need > 0:
                    m.rows.add(sum(m.x[u, k] for u in members if cand[u, k]) >= need)
            for u in has:
                if has[u]:
                    m.rows.add(sum(m.x[u, k] for k in has[u]) >= 1)
                    if extra[has[u]].sum() > mem_free[u]:
                        m.rows.add(sum(extra[k] / _MB * m.x[u, k] for k in has[u]) <= mem_free[u] / _MB)
            obj = obj - w_U * sum(value[u, k] * m.x[u, k] for (u, k) in uk if a[u] == e)
    m.obj = pyo.Objective(expr=obj, sense=pyo.minimize)

    def decode(model) -> dict:
        train, tier = plan.train.copy(), plan.tier.copy()
        if free_x:
            for (u, k) in uk:
                train[u, k] = (model.x[u, k].value or 0.0) > 0.5
        period, energy = np.full(n_e, np.nan), np.full(n_e, np.nan)
        for e, (shape, e_expr, kept) in figures.items():
            top, down, last = (max((pyo.value(t) for t in shape[p]), default=0.0) for p in ("up", "down", "last"))
            period[e] = g * top + (g - 1) * down + max(last - pyo.value(shape["dl"]), 0.0) + pyo.value(shape["rest"])
            energy[e] = pyo.value(e_expr)
            for k in np.flatnonzero(cand[a == e].any(axis=0)):
                at_cloud = not edge_ok[k] or ((e, int(k)) in model.c and (model.c[e, int(k)].value or 0.0) > 0.5)
                tier[e, k] = EDGE if local[k] or not at_cloud else CLOUD
                if int(k) in kept and (kept[int(k)].value or 0.0) > 0.5:
                    tier[e, k] = AGG
        utility = float((value * train)[np.isin(a, edges)].sum())
        return {"train": train, "tier": tier, "period_s": period, "energy_j": energy, "utility": utility}

    def encode(model, warm: dict) -> None:
        for (u, k) in uk:
            model.x[u, k].set_value(float(warm["train"][u, k]))

    families = {"rows": "F1-in-F4 rows (coverage, participation, memory, linking, round times, period budget)"}
    labels = {"x": lambda uk_: f"device id {dev.ids[uk_[0]]}, module {scenario.module_names[uk_[1]]}"}
    return MilpModel(name=m.name, model=m, decoder=decode, encoder=encode, build_s=time.perf_counter() - t0,
                     families=families, labels=labels, data={"cand": cand, "value": value, "edge_ok": edge_ok})


def _tree_rows(scenario, plan, m, e, members, has, comp, e_comp, X, edge_bits, kept, free_x, shannon_rate):
    """The D2D cluster's rows of :func:`build_f4_placement`: (period less backhaul, edge downlink and the last
    round's extra, energy less the backhaul and the edge downlink, figures: "up", "down" and "last" terms (the
    last-round broadcast of the modules ``kept`` (k -> binary) at the aggregator to each member), "rest" the
    aggregator's upload)."""
    dev, n0, bw, g = scenario.devices, scenario.noise_psd_w_per_hz, scenario.d2d.bandwidth_hz, int(plan.e_agg)
    s_k = scenario.module_arrays["update_bits"]
    par, root = plan.parent, int(plan.aggregator[e])
    path = {}
    for u in members:
        v, hops = int(u), []
        while v != root:
            hops.append(v)
            v = int(par[v])
        path[int(u)] = hops
    sub = {int(v): [u for u in path if v in path[u]] for v in members if v != root}
    hop, down, last, e_link = {}, {}, {}, 0.0
    for v, below in sub.items():
        gain_up = scenario.d2d.gain[scenario.link_lookup([v], [par[v]])[0]]
        gain_dn = scenario.d2d.gain[scenario.link_lookup([par[v]], [v])[0]]
        r_up = float(shannon_rate(bw, plan.d2d_power_w[v], gain_up, n0))
        r_dn = float(shannon_rate(bw, plan.d2d_down_power_w[v], gain_dn, n0))
        ks = sorted({k for u in below for k in has[u]})
        h, hk = {}, {}  # the subtree trains k; and keeps it at the aggregator
        for k in ks:
            h[k] = m.r["h", v, k] if free_x else 1.0
            if k in kept:
                hk[k] = m.r["l", v, k] if free_x else kept[k]
            for u in below:
                if free_x and k in has[u]:
                    m.rows.add(h[k] - m.x[u, k] >= 0)
                    if k in kept:
                        m.rows.add(hk[k] - m.x[u, k] - kept[k] >= -1)
        bits_or = sum(s_k[k] * h[k] for k in ks)
        bits_up = bits_or if plan.relay_mode == "aggregate" else sum(s_k[k] * X(u, k) for u in below for k in has[u])
        hop[v], down[v] = bits_up / r_up, bits_or / r_dn
        e_link = e_link + g * plan.d2d_power_w[v] * hop[v] + (g - 1) * plan.d2d_down_power_w[v] * down[v]
        if hk:
            last[v] = sum(s_k[k] * hk[k] for k in hk) / r_dn
            e_link = e_link + plan.d2d_down_power_w[v] * last[v]
    up_terms = [comp[int(u)] + sum(hop[v] for v in path[int(u)]) for u in members]
    down_terms = [sum(down[v] for v in path[int(u)]) for u in members] if g > 1 else []
    last_terms = [sum(last[v] for v in path[int(u)] if v in last) for u in members] if last else []
    for term in up_terms:
        m.rows.add(m.r["U", e] - term >= 0)
    for term in down_terms:
        m.rows.add(m.r["D", e] - term >= 0)
    rate_root = float(shannon_rate(plan.bandwidth_hz[root], plan.power_w[root], dev.uplink_gain[root, e], n0))
    t_agg = edge_bits / rate_root
    period = g * m.r["U", e] + ((g - 1) * m.r["D", e] if g > 1 else 0.0) + t_agg
    energy = g * e_comp + e_link + plan.power_w[root] * t_agg
    return period, energy, {"up": up_terms, "down": down_terms, "last": last_terms, "rest": t_agg}
