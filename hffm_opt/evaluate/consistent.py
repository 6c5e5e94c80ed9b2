"""``evaluate(scenario, plan)``: check every constraint of a plan and price one global period.

Two accountings:

- ``consistent`` (default): one power per link for both rate and energy, compute included, relay trees with
  in-network aggregation (or store-and-forward with ``plan.relay_mode == "forward"``), stragglers dropped.
- ``paper``: the HF-FM prototype's formulas (section 7 of the design), see :mod:`hffm_opt.evaluate.paper`.

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

import numpy as np

from ..errors import PlanError
from ..network import trees
from ..network.channel import backhaul_time, shannon_rate
from ..network.scenario import Scenario
from ..plan import AGG, CLOUD, EDGE, Plan
from .checks import Tree
from .metrics import Metrics, zero_parts


def consistent_metrics(scenario: Scenario, plan: Plan, tree: Tree) -> Metrics:
    dev, edges, n0 = scenario.devices, scenario.edges, scenario.noise_psd_w_per_hz
    mods = scenario.module_arrays
    n, n_e, g_rounds = scenario.n_devices, scenario.n_edges, int(plan.e_agg)
    a, x = plan.association, plan.train
    u_idx = np.arange(n)
    s_bits = x @ mods["update_bits"]
    cycles = plan.round_cycles(scenario)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # an infinite time is refused below
        t_comp = np.where(cycles > 0, cycles / plan.cpu_hz, 0.0)
    e_comp = dev.kappa * cycles * plan.cpu_hz ** 2
    deadline = np.inf if plan.deadline_s is None else plan.deadline_s

    if plan.mode == "star":
        t_link = backhaul_time(s_bits, edges.backhaul_delay_s[a], edges.backhaul_rate_bps[a])
        ready = t_comp + t_link
        _arrives(scenario, ready, ready)
        late = ready > deadline
        up = _cluster_up(ready, late, a, n_e, deadline)
        e_up = np.where(late, 0.0, edges.backhaul_power_w[a] * t_link)
        period = float(up.max(initial=0.0))
        crit = _critical(ready, late)
        lat_parts = zero_parts() | {"compute": t_comp[crit], "uplink": ready[crit] - t_comp[crit],
                                    "wait": period - ready[crit]}
        energy = zero_parts() | {"compute": e_comp.sum(), "uplink": e_up.sum()}
        bits = zero_parts() | {"uplink": s_bits[~late].sum()}
        return Metrics("consistent", 1, period, sum(energy.values()), np.array([period]),
                       np.array([sum(energy.values())]), energy, lat_parts, bits, late, up,
                       np.bincount(a, weights=e_comp + e_up, minlength=n_e))

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
        t_hop = np.where(member, np.where(par >= 0, hop_bits / rate_d2d, 0.0),
                         np.where(s_bits > 0, s_bits / rate_up, 0.0))
    t_reach = np.where(member, trees.path_sum(par, depth, t_hop), t_hop)
    ready = t_comp + t_reach
    _arrives(scenario, t_comp + t_hop, ready)
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
    trained_e = plan.cluster_modules(x & ~late[:, None])
    bits_edge_up = (trained_e & (plan.tier >= EDGE)) @ mods["update_bits"]
    bits_cloud = (trained_e & (plan.tier == CLOUD)) @ mods["update_bits"]

    # downward broadcast inside D2D trees (every round but the last; in the last, aggregator-tier modules only)
    down_all, e_down_all = _tree_broadcast(plan, depth, member, x, mods["update_bits"], down_gain, n0, bw_d2d, None,
                                           n_e)
    down_agg, e_down_agg = _tree_broadcast(plan, depth, member, x, mods["update_bits"], down_gain, n0, bw_d2d,
                                           tier_dev == AGG, n_e)
    # edge downlink broadcast at the weakest member's rate (only when the edge's downlink power is given)
    min_gain = np.full(n_e, np.inf)
    np.minimum.at(min_gain, a, gain_up)
    r_down = shannon_rate(edges.bandwidth_hz, edges.downlink_power_w, np.where(np.isfinite(min_gain), min_gain, 0.0),
                          n0)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_dl = np.where((bits_edge_up > 0) & (r_down > 0), bits_edge_up / r_down, 0.0)
    e_dl = edges.downlink_power_w * t_dl
    d2d_cluster = plan.uses_d2d
    # the D2D aggregator's upload of the cluster aggregate in the last round
    agg_dev = np.where(d2d_cluster, plan.aggregator, 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_agg_up = np.where(d2d_cluster & (bits_edge_up > 0), bits_edge_up / rate_up[agg_dev], 0.0)
    e_agg_up = plan.power_w[agg_dev] * t_agg_up
    t_bh = backhaul_time(bits_cloud, edges.backhaul_delay_s, edges.backhaul_rate_bps)
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
            "d2d": g_rounds * relay_bits.sum()
            + _down_bits(plan, depth, member, x, mods["update_bits"], tier_dev, g_rounds),
            "downlink": (g_rounds * (t_dl > 0) * bits_edge_up).sum(), "backhaul": bits_cloud.sum()}

    e_star = int(np.argmax(cluster_period)) if n_e else 0
    in_e = np.flatnonzero(a == e_star)
    crit = in_e[_critical(ready[in_e], late[in_e])] if in_e.size else 0
    comm_key = "d2d" if d2d_cluster[e_star] else "uplink"
    lat_parts = zero_parts()
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
    cluster_energy = ((g_rounds - 1) * (round_common + e_down_regular) + round_common + e_agg_up + e_bh + e_dl
                      + np.where(d2d_cluster, e_down_agg, 0.0))
    return Metrics("consistent", g_rounds, period, float(sum(energy.values())), ends, round_energy,
                   {k: float(v) for k, v in energy.items()}, {k: float(v) for k, v in lat_parts.items()},
                   {k: float(v) for k, v in bits.items()}, late, cluster_period, cluster_energy)



MAX_READY_S = 1e15  # s: no device of any plan is ready later (periods are at most 1e13 s: 1e9 s x E_agg 1e4)


def _arrives(scenario: Scenario, own: np.ndarray, ready: np.ndarray) -> None:
    """Refuse a plan under which some device's update never arrives: its own compute + first hop time (``own``,
    checked first, so the device at fault is named) or its ready time is not finite or above :data:`MAX_READY_S`
    (a CPU speed or link rate of the plan that is 0, or next to 0, for its load)."""
    for t in (own, ready):
        bad = np.flatnonzero(~(t <= MAX_READY_S))
        if bad.size:
            u = int(bad[0])
            raise PlanError(f"devices[id={scenario.devices.ids[u]}] ready time = {t[u]:.6g} s: its update never "
                            f"arrives within {MAX_READY_S:g} s (the plan's cpu_hz or a link's power and bandwidth give "
                            "it a rate of 0, or next to 0, for its load)")


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
