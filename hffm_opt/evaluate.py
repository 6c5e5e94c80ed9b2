"""``evaluate(scenario, plan)``: check every constraint of a plan and price one global period.

Two accountings:

- ``consistent`` (default): one power per link for both rate and energy, compute included, relay trees with
  in-network aggregation (or store-and-forward with ``plan.relay_mode == "forward"``), stragglers dropped.
- ``paper``: the HF-FM prototype's formulas (section 7 of the design), see :mod:`hffm_opt.paper_accounting`.

Consistent accounting, per edge round of cluster e (all sizes from the modules each device trains):

- device u computes ``tau * min(batch, n_u) * sum_k phi_k x[u,k]`` FLOP at ``cpu_hz``: time ``C/f``, energy
  ``kappa C f^2`` with ``C`` cycles;
- without D2D it uploads its update to the edge (FDMA share ``b_u``, power ``p_u``); with D2D its update climbs
  the relay tree (each link ``B_d``, power of the link), a node sending once all its children have arrived;
- ready time = compute + time to reach the aggregation point (a relay link's time counts once the sender holds
  all its children's updates); a device later than ``deadline_s`` is a straggler:
  it is dropped (its compute energy is still spent; it sends nothing of its own) and the round waits until the
  deadline;
- then the aggregate comes back down: D2D broadcast down the tree, or the edge's downlink broadcast (modelled
  when the edge has ``downlink_power_w > 0``, at the weakest member's rate);
- in the last round of the period the D2D aggregator uploads the cluster aggregate to the edge and the edge sends
  its cloud-tier modules over the backhaul (fixed delay + bits / rate, the backhaul power charged for both).

Clusters run their edge rounds independently; the period ends when the slowest cluster's backhaul transfer is
done. Per-edge-round figures are the period's divided by ``e_agg``. Star: every device sends its update straight
to the cloud every round over the backhaul constants of its edge server (the prototype's model).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import trees
from .channel import shannon_rate
from .plan import MODES, RELAY_MODES, TIERS, Plan, PlanError
from .scenario import Scenario

PARTS = ("compute", "uplink", "d2d", "downlink", "backhaul")
_TOL = 1e-9
AGG, EDGE, CLOUD = (TIERS.index(t) for t in ("aggregator", "edge", "cloud"))


@dataclass(frozen=True, eq=False)
class Metrics:
    """Latency (s) and energy (J) of one global period of a plan, with breakdowns.

    ``latency_s``/``energy_j`` are per edge round (period / e_agg). ``round_end_s`` (e_agg,) is the time at
    which every cluster has finished edge round r (last entry = period latency); ``round_energy_j`` (e_agg,)
    sums to the period energy. ``energy_by_part``/``bits_by_part`` are per period over :data:`PARTS`;
    ``latency_by_part`` decomposes the period latency along the critical cluster's path (``wait`` = time spent
    waiting for the deadline). ``stragglers`` (U,) marks devices dropped from every round.
    """

    accounting: str
    e_agg: int
    period_latency_s: float
    period_energy_j: float
    round_end_s: np.ndarray
    round_energy_j: np.ndarray
    energy_by_part: dict
    latency_by_part: dict
    bits_by_part: dict
    stragglers: np.ndarray

    @property
    def latency_s(self) -> float:
        """Latency per edge round (s)."""
        return self.period_latency_s / self.e_agg

    @property
    def energy_j(self) -> float:
        """Energy per edge round (J)."""
        return self.period_energy_j / self.e_agg

    @property
    def access_energy_j(self) -> float:
        """Devices' transmission energy (uplink + D2D) per edge round (J)."""
        return (self.energy_by_part["uplink"] + self.energy_by_part["d2d"]) / self.e_agg

    @property
    def backhaul_energy_j(self) -> float:
        """Backhaul energy per edge round (J)."""
        return self.energy_by_part["backhaul"] / self.e_agg

    @property
    def energy_by_tier(self) -> dict:
        """Per-period energy of the device tier (compute, uplink, D2D) and the edge tier (downlink, backhaul)."""
        p = self.energy_by_part
        return {"device": p["compute"] + p["uplink"] + p["d2d"], "edge": p["downlink"] + p["backhaul"]}

    @property
    def participants(self) -> np.ndarray:
        """(U,) bool: devices whose updates are aggregated."""
        return ~self.stragglers

    def summary(self) -> dict:
        """Flat JSON-ready dict of the headline figures."""
        return {"accounting": self.accounting, "e_agg": self.e_agg, "latency_s": self.latency_s,
                "energy_j": self.energy_j, "access_energy_j": self.access_energy_j,
                "backhaul_energy_j": self.backhaul_energy_j, "period_latency_s": self.period_latency_s,
                "period_energy_j": self.period_energy_j, "n_stragglers": int(self.stragglers.sum()),
                "energy_by_part_j": dict(self.energy_by_part), "latency_by_part_s": dict(self.latency_by_part)}


def evaluate(scenario: Scenario, plan: Plan, accounting: str = "consistent") -> Metrics:
    """Check ``plan`` against ``scenario`` (raises :class:`PlanError`) and price one global period."""
    tree = check(scenario, plan)
    if accounting == "consistent":
        return _consistent(scenario, plan, tree)
    if accounting == "paper":
        from .paper_accounting import paper_metrics

        return paper_metrics(scenario, plan)
    raise ValueError(f"accounting = {accounting!r}: must be 'consistent' or 'paper'")


def _bad(field_name, value, rule):
    raise PlanError(f"{field_name} = {value!r}: {rule}")


def _first(mask, field_name, values, ids, rule):
    bad = np.flatnonzero(~mask)
    if bad.size:
        i = int(bad[0])
        v = values[i]
        _bad(f"{field_name}[{ids[i]}]", v.tolist() if hasattr(v, "tolist") else v, rule)


@dataclass(frozen=True)
class _Tree:
    member: np.ndarray  # (U,) device is in a D2D cluster
    depth: np.ndarray  # (U,) depth in its relay tree, -1 outside


def check(scenario: Scenario, plan: Plan) -> _Tree:
    """Every constraint of section 3; returns the relay-forest depths. Raises :class:`PlanError`."""
    n, n_e, n_k = scenario.n_devices, scenario.n_edges, len(scenario.modules)
    dev, ids = scenario.devices, scenario.devices.ids
    eid = scenario.edges.ids
    if plan.mode not in MODES:
        _bad("mode", plan.mode, f"must be one of {MODES}")
    if plan.relay_mode not in RELAY_MODES:
        _bad("relay_mode", plan.relay_mode, f"must be one of {RELAY_MODES}")
    if int(plan.e_agg) != plan.e_agg or plan.e_agg < 1:
        _bad("e_agg", plan.e_agg, "must be an integer >= 1")
    if plan.mode == "star" and plan.e_agg != 1:
        _bad("e_agg", plan.e_agg, "a star plan aggregates at the cloud every round: e_agg must be 1")
    for name in ("local_steps", "batch_size"):
        v = getattr(plan, name)
        if int(v) != v or v < 1:
            _bad(name, v, "must be an integer >= 1")
    if plan.deadline_s is not None and not (plan.deadline_s > 0 and np.isfinite(plan.deadline_s)):
        _bad("deadline_s", plan.deadline_s, "must be a finite number of seconds > 0, or None")
    shapes = {"association": (n,), "train": (n, n_k), "tier": (n_e, n_k), "aggregator": (n_e,), "parent": (n,),
              "bandwidth_hz": (n,), "power_w": (n,), "d2d_power_w": (n,), "d2d_down_power_w": (n,), "cpu_hz": (n,)}
    for name, want in shapes.items():
        if getattr(plan, name).shape != want:
            _bad(f"{name}.shape", getattr(plan, name).shape, f"must be {want} for this scenario")
    for name in ("bandwidth_hz", "power_w", "d2d_power_w", "d2d_down_power_w", "cpu_hz"):
        v = getattr(plan, name)
        _first(np.isfinite(v) & (v >= 0), name, v, ids, "must be finite and >= 0")

    a = plan.association
    _first((a >= 0) & (a < n_e), "association", a, ids, f"must be an edge index in [0, {n_e})")
    _first(np.isfinite(dev.uplink_gain[np.arange(n), a]), "association", eid[a], ids,
           "no uplink gain to that edge server: the association is not allowed")
    mods = scenario.module_arrays
    x = plan.train
    _first(~(x & ~scenario.need).any(axis=1), "train", x.astype(int), ids, "a device may train only modules in Need(u)")
    _first(~(x & ~mods["trainable"]).any(axis=1), "train", x.astype(int), ids, "frozen modules cannot be trained")
    mem = (scenario.need & ~x) @ mods["memory_bytes"] + x @ (mods["memory_bytes"] + mods["train_memory_bytes"])
    _first(mem <= dev.memory_bytes * (1 + _TOL), "memory_bytes", mem, ids, "modules held exceed the device memory")
    _first(plan.cpu_hz <= dev.cpu_hz * (1 + _TOL), "cpu_hz", plan.cpu_hz, ids, "exceeds the device's max CPU frequency")
    _first(~(x.any(axis=1) & (plan.cpu_hz <= 0)), "cpu_hz", plan.cpu_hz, ids, "a device that trains needs cpu_hz > 0")
    _first(plan.power_w <= dev.pmax_w * (1 + _TOL), "power_w", plan.power_w, ids, "exceeds the device's max power")
    _first(plan.d2d_power_w <= dev.pmax_w * (1 + _TOL), "d2d_power_w", plan.d2d_power_w, ids,
           "exceeds the device's max power")
    t = plan.tier
    _first(((t >= 0) & (t < len(TIERS))).all(axis=1), "tier", t, eid, f"tiers index {TIERS}")
    _first(~((t == CLOUD) & mods["cluster_local"]).any(axis=1), "tier", t, eid, "a cluster-local module never goes to the cloud")
    if plan.mode == "star":
        _first((t == CLOUD).all(axis=1), "tier", t, eid, "a star plan aggregates every module at the cloud")
        _first(plan.aggregator < 0, "aggregator", plan.aggregator, eid, "a star plan has no D2D aggregation")

    d2d = plan.uses_d2d
    _first(~((t == AGG).any(axis=1) & ~d2d), "tier", t, eid, "the 'aggregator' tier needs a D2D aggregator in the cluster")
    uplinkers = _uplinkers(plan) if plan.mode == "hierarchical" else np.zeros(n, bool)
    _first(~uplinkers | (plan.bandwidth_hz > 0), "bandwidth_hz", plan.bandwidth_hz, ids, "a device that uploads needs b_u > 0")
    _first(~uplinkers | (plan.power_w > 0), "power_w", plan.power_w, ids, "a device that uploads needs p_u > 0")
    used = np.bincount(a, weights=np.where(plan.mode == "hierarchical", plan.bandwidth_hz, 0.0), minlength=n_e)
    _first(used <= scenario.edges.bandwidth_hz * (1 + _TOL), "bandwidth_hz(sum over cluster)", used, eid,
           "the cluster's uplink shares exceed the edge bandwidth B_e")
    return _check_tree(scenario, plan)


def _uplinkers(plan: Plan) -> np.ndarray:
    """Devices that use the edge uplink: every device of a non-D2D cluster, and D2D aggregators."""
    up = ~plan.uses_d2d[plan.association]
    agg = plan.aggregator[plan.aggregator >= 0]
    up[agg] = True
    return up


def _check_tree(scenario: Scenario, plan: Plan) -> _Tree:
    n, ids, eid = scenario.n_devices, scenario.devices.ids, scenario.edges.ids
    a, agg, par = plan.association, plan.aggregator, plan.parent
    _first((agg >= -1) & (agg < n), "aggregator", agg, eid, "must be a device index or -1")
    roots = agg[agg >= 0]
    _first(a[roots] == np.flatnonzero(agg >= 0), "aggregator", ids[roots], eid[agg >= 0],
           "the D2D aggregator must be associated with that edge server")
    member = plan.uses_d2d[a]
    _first((par >= -1) & (par < n), "parent", par, ids, "must be a device index or -1")
    is_root = np.zeros(n, bool)
    is_root[roots] = True
    _first(~(~member & (par >= 0)), "parent", par, ids, "a device outside a D2D cluster has no relay parent")
    _first(~(is_root & (par >= 0)), "parent", par, ids, "the aggregator is the root of its tree (parent -1)")
    _first(~(member & ~is_root & (par < 0)), "parent", par, ids, "every non-aggregator device of a D2D cluster needs a parent")
    child = np.flatnonzero(par >= 0)
    if child.size:
        _first(a[par[child]] == a[child], "parent", ids[par[child]], ids[child], "relay links stay inside the cluster")
        up_ok = scenario.link_lookup(child, par[child]) >= 0
        down_ok = scenario.link_lookup(par[child], child) >= 0
        _first(up_ok & down_ok, "parent", ids[par[child]], ids[child],
               "a relay-tree link must be a listed D2D link in both directions (in range)")
        _first(plan.d2d_power_w[child] > 0, "d2d_power_w", plan.d2d_power_w[child], ids[child], "a relay link needs power > 0")
        down = plan.d2d_down_power_w[child]
        _first(down > 0, "d2d_down_power_w", down, ids[child], "a relay link needs power > 0")
        _first(down <= scenario.devices.pmax_w[par[child]] * (1 + _TOL), "d2d_down_power_w", down, ids[child],
               "exceeds the max power of the parent, who transmits it")
    depth = trees.depths(par, member, roots)
    _first(~(member & (depth < 0)), "parent", par, ids, "the relay tree has a cycle or does not reach the aggregator")
    return _Tree(member=member, depth=depth)


# ---------------------------------------------------------------------- consistent accounting
def _consistent(scenario: Scenario, plan: Plan, tree: _Tree) -> Metrics:
    dev, edges, n0 = scenario.devices, scenario.edges, scenario.noise_psd_w_per_hz
    mods = scenario.module_arrays
    n, n_e, g_rounds = scenario.n_devices, scenario.n_edges, int(plan.e_agg)
    a, x = plan.association, plan.train
    u_idx = np.arange(n)
    s_bits = x @ mods["update_bits"]
    batch = np.minimum(plan.batch_size, dev.samples.sum(axis=1))
    cycles = plan.local_steps * batch * (x @ mods["flops_per_sample"]) / dev.flops_per_cycle
    with np.errstate(divide="ignore", invalid="ignore"):
        t_comp = np.where(cycles > 0, cycles / plan.cpu_hz, 0.0)
    e_comp = dev.kappa * cycles * plan.cpu_hz ** 2
    deadline = np.inf if plan.deadline_s is None else plan.deadline_s

    if plan.mode == "star":
        t_link = np.where(s_bits > 0, edges.backhaul_delay_s[a] + s_bits / edges.backhaul_rate_bps[a], 0.0)
        ready = t_comp + t_link
        late = ready > deadline
        up = _cluster_up(ready, late, a, n_e, deadline)
        e_up = np.where(late, 0.0, edges.backhaul_power_w[a] * t_link)
        period = float(up.max(initial=0.0))
        crit = _critical(ready, late)
        lat_parts = _zero_parts() | {"compute": t_comp[crit], "uplink": ready[crit] - t_comp[crit], "wait": period - ready[crit]}
        energy = _zero_parts() | {"compute": e_comp.sum(), "uplink": e_up.sum()}
        bits = _zero_parts() | {"uplink": s_bits[~late].sum()}
        return Metrics("consistent", 1, period, sum(energy.values()), np.array([period]),
                       np.array([sum(energy.values())]), energy, lat_parts, bits, late)

    gain_up = dev.uplink_gain[u_idx, a]
    member, depth, par = tree.member, tree.depth, plan.parent
    # upward transmission of each device: to the edge (no D2D) or to its relay parent
    link_gain = np.ones(n)
    child = np.flatnonzero(par >= 0)
    link_gain[child] = scenario.d2d.gain[scenario.link_lookup(child, par[child])]
    down_gain = np.ones(n)
    down_gain[child] = scenario.d2d.gain[scenario.link_lookup(par[child], child)]
    if plan.relay_mode == "aggregate":
        sub = trees.subtree_or(par, depth, x) if member.any() else x
        hop_bits = sub @ mods["update_bits"]
    else:
        hop_bits = trees.subtree_sum(par, depth, s_bits) if member.any() else s_bits
    bw_d2d = scenario.d2d.bandwidth_hz
    rate_d2d = shannon_rate(bw_d2d, plan.d2d_power_w, link_gain, n0)
    rate_up = shannon_rate(plan.bandwidth_hz, plan.power_w, gain_up, n0)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_hop = np.where(member, np.where(par >= 0, hop_bits / rate_d2d, 0.0), np.where(s_bits > 0, s_bits / rate_up, 0.0))
    t_reach = np.where(member, trees.path_sum(par, depth, t_hop), t_hop)
    ready = t_comp + t_reach
    late = ready > deadline
    up = _cluster_up(ready, late, a, n_e, deadline)

    # upward energy: a direct uploader sends only if it made the deadline; a relay link carries traffic if its
    # subtree holds any participant
    if member.any():
        live = trees.subtree_sum(par, depth, (~late).astype(float)) > 0
    else:
        live = ~late
    e_hop = np.where(member, np.where(par >= 0, plan.d2d_power_w, 0.0), plan.power_w) * np.where(live, t_hop, 0.0)
    e_up_d2d = np.bincount(a, weights=np.where(member, e_hop, 0.0), minlength=n_e)
    e_up_direct = np.bincount(a, weights=np.where(member, 0.0, e_hop), minlength=n_e)

    # what each cluster aggregates (modules trained by its participants), by tier
    tier_dev = plan.tier[a]  # (U, K)
    trained_e = np.zeros((n_e, x.shape[1]), bool)
    np.logical_or.at(trained_e, a, x & ~late[:, None])
    bits_edge_up = (trained_e & (plan.tier >= EDGE)) @ mods["update_bits"]
    bits_cloud = (trained_e & (plan.tier == CLOUD)) @ mods["update_bits"]

    # downward broadcast inside D2D trees (every round but the last; in the last, aggregator-tier modules only)
    down_all, e_down_all = _tree_broadcast(plan, depth, member, x, mods["update_bits"], down_gain, n0, bw_d2d, None, n_e)
    down_agg, e_down_agg = _tree_broadcast(plan, depth, member, x, mods["update_bits"], down_gain, n0, bw_d2d,
                                           tier_dev == AGG, n_e)
    # edge downlink broadcast at the weakest member's rate (only when the edge's downlink power is given)
    min_gain = np.full(n_e, np.inf)
    np.minimum.at(min_gain, a, gain_up)
    r_down = shannon_rate(edges.bandwidth_hz, edges.downlink_power_w, np.where(np.isfinite(min_gain), min_gain, 0.0), n0)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_dl = np.where((bits_edge_up > 0) & (r_down > 0), bits_edge_up / r_down, 0.0)
    e_dl = edges.downlink_power_w * t_dl
    d2d_cluster = plan.uses_d2d
    # the D2D aggregator's upload of the cluster aggregate in the last round
    agg_dev = np.where(d2d_cluster, plan.aggregator, 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_agg_up = np.where(d2d_cluster & (bits_edge_up > 0), bits_edge_up / rate_up[agg_dev], 0.0)
    e_agg_up = plan.power_w[agg_dev] * t_agg_up
    t_bh = np.where(bits_cloud > 0, edges.backhaul_delay_s + bits_cloud / edges.backhaul_rate_bps, 0.0)
    e_bh = edges.backhaul_power_w * t_bh

    down_regular = np.where(d2d_cluster, down_all, t_dl)
    e_down_regular = np.where(d2d_cluster, e_down_all, e_dl)
    lat_regular = up + down_regular
    lat_last = up + t_agg_up + t_bh + np.maximum(t_dl, np.where(d2d_cluster, down_agg, 0.0))
    cluster_period = (g_rounds - 1) * lat_regular + lat_last
    period = float(cluster_period.max(initial=0.0))
    ends = np.array([float(((r + 1) * lat_regular).max(initial=0.0)) for r in range(g_rounds - 1)] + [period])

    e_comp_c = np.bincount(a, weights=e_comp, minlength=n_e)
    round_common = e_comp_c + e_up_d2d + e_up_direct
    energy_regular = (round_common + e_down_regular).sum()
    energy_last = (round_common + e_agg_up + e_bh + e_dl + np.where(d2d_cluster, e_down_agg, 0.0)).sum()
    energy = {"compute": g_rounds * e_comp_c.sum(),
              "uplink": g_rounds * e_up_direct.sum() + e_agg_up.sum(),
              "d2d": g_rounds * e_up_d2d.sum() + (g_rounds - 1) * np.where(d2d_cluster, e_down_all, 0.0).sum()
              + np.where(d2d_cluster, e_down_agg, 0.0).sum(),
              "downlink": ((g_rounds - 1) * np.where(d2d_cluster, 0.0, e_dl) + e_dl).sum(),
              "backhaul": e_bh.sum()}
    round_energy = np.array([energy_regular] * (g_rounds - 1) + [energy_last])

    direct_bits = np.where(member | late, 0.0, s_bits)
    relay_bits = np.where(member & (par >= 0) & live, hop_bits, 0.0)
    bits = {"compute": 0.0, "uplink": g_rounds * direct_bits.sum() + (d2d_cluster * bits_edge_up).sum(),
            "d2d": g_rounds * relay_bits.sum() + _down_bits(plan, depth, member, x, mods["update_bits"], tier_dev, g_rounds),
            "downlink": (g_rounds * (t_dl > 0) * bits_edge_up).sum(), "backhaul": bits_cloud.sum()}

    e_star = int(np.argmax(cluster_period)) if n_e else 0
    in_e = np.flatnonzero(a == e_star)
    crit = in_e[_critical(ready[in_e], late[in_e])] if in_e.size else 0
    comm_key = "d2d" if d2d_cluster[e_star] else "uplink"
    lat_parts = _zero_parts()
    lat_parts["compute"] = g_rounds * t_comp[crit]
    lat_parts[comm_key] += g_rounds * (ready[crit] - t_comp[crit])
    lat_parts["wait"] = g_rounds * (up[e_star] - ready[crit])
    if d2d_cluster[e_star]:
        lat_parts["d2d"] += (g_rounds - 1) * down_all[e_star]
        lat_parts["uplink"] += t_agg_up[e_star]
    else:
        lat_parts["downlink"] += (g_rounds - 1) * t_dl[e_star]
    last_down = max(t_dl[e_star], down_agg[e_star] if d2d_cluster[e_star] else 0.0)
    lat_parts["downlink" if t_dl[e_star] >= last_down else "d2d"] += last_down
    lat_parts["backhaul"] = t_bh[e_star]
    return Metrics("consistent", g_rounds, period, float(sum(energy.values())), ends, round_energy,
                   {k: float(v) for k, v in energy.items()}, {k: float(v) for k, v in lat_parts.items()},
                   {k: float(v) for k, v in bits.items()}, late)


def _zero_parts() -> dict:
    return {p: 0.0 for p in PARTS} | {"wait": 0.0}


def _critical(ready: np.ndarray, late: np.ndarray) -> int:
    """Index of the participant with the largest ready time (or of the latest device if all are late)."""
    if ready.size == 0:
        return 0
    return int(np.argmax(np.where(late, -np.inf, ready))) if (~late).any() else int(np.argmax(ready))


def _cluster_up(ready, late, a, n_e, deadline) -> np.ndarray:
    """(E,) time until a cluster's aggregation point holds every participant's update (deadline if any is late)."""
    up = np.zeros(n_e)
    np.maximum.at(up, a, np.where(late, 0.0, ready))
    any_late = np.bincount(a, weights=late.astype(float), minlength=n_e) > 0
    return np.where(any_late, deadline, up)


def _tree_broadcast(plan, depth, member, x, update_bits, down_gain, n0, bw, module_mask, n_e):
    """(E,) time and energy to broadcast down each D2D tree what each subtree trains (restricted to a mask)."""
    if not member.any():
        return np.zeros(n_e), np.zeros(n_e)
    own = x if module_mask is None else x & module_mask
    bits = trees.subtree_or(plan.parent, depth, own) @ update_bits
    rate = shannon_rate(bw, plan.d2d_down_power_w, down_gain, n0)
    hop = plan.parent >= 0
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(hop & (bits > 0), bits / rate, 0.0)
    arrive = trees.path_sum(plan.parent, depth, t)
    t_e = np.zeros(n_e)
    np.maximum.at(t_e, plan.association, np.where(member, arrive, 0.0))
    e_e = np.bincount(plan.association, weights=plan.d2d_down_power_w * t, minlength=n_e)
    return t_e, e_e


def _down_bits(plan, depth, member, x, update_bits, tier_dev, g_rounds) -> float:
    """Bits sent down D2D trees over a period (all modules in regular rounds, aggregator tier in the last)."""
    if not member.any():
        return 0.0
    hop = plan.parent >= 0
    all_bits = (trees.subtree_or(plan.parent, depth, x) @ update_bits)[hop].sum()
    agg_bits = (trees.subtree_or(plan.parent, depth, x & (tier_dev == AGG)) @ update_bits)[hop].sum()
    return float((g_rounds - 1) * all_bits + agg_bits)
