"""The HF-FM paper prototype's accounting (section 7 of the design), applied to any plan.

Baselines to reproduce exactly, not physics to trust: rates use the prototype's rate powers and fixed
bandwidths, energy its (different) energy powers; compute, downlinks, deadlines and the plan's own powers
and bandwidths are ignored. ``S`` is each device's update size (the prototype has one size for all; the
edge's model size ``S_e`` is the largest in its cluster). A plan without any cloud-tier module is priced as
the prototype's "edge only" (no backhaul energy, backhaul delay still in the latency). Latency and energy
per edge round in s and J.
"""

from __future__ import annotations

import numpy as np

from ..network.channel import shannon_rate
from ..network.scenario import Scenario
from ..network.topology import distances_from, distances_to, prototype_latency_graph
from ..plan import CLOUD, Plan
from .metrics import Metrics, zero_parts


def paper_metrics(scenario: Scenario, plan: Plan) -> Metrics:
    """Section 7's latency and energy for ``plan`` (checked by the caller), as :class:`Metrics`."""
    proto, mods = scenario.prototype, scenario.module_arrays
    n, n_e = scenario.n_devices, scenario.n_edges
    a = plan.association
    s_bits = plan.train @ mods["update_bits"]
    gain = scenario.devices.uplink_gain[np.arange(n), a]
    rate = shannon_rate(proto.uplink_bandwidth_hz, proto.uplink_rate_power_w, gain, scenario.noise_psd_w_per_hz)
    lat_up = np.where(s_bits > 0, s_bits / np.where(rate > 0, rate, 1.0), 0.0)
    none = np.zeros(n, bool)

    if plan.mode == "star":
        s2c = np.where(s_bits > 0, proto.backhaul_delay_s + s_bits / proto.backhaul_rate_bps, 0.0)
        latency = float(s2c.max(initial=0.0))
        energy = zero_parts() | {"uplink": float(s2c.sum() * proto.backhaul_energy_power_w)}
        return _metrics(1, latency, energy, none)

    g = int(plan.e_agg)
    s_edge = np.zeros(n_e)
    np.maximum.at(s_edge, a, s_bits)
    s2c = proto.backhaul_delay_s + s_edge / proto.backhaul_rate_bps
    to_cloud = (plan.cluster_modules() & (plan.tier == CLOUD)).any(axis=1)
    any_cloud = bool(to_cloud.any())
    max_up = np.zeros(n_e)
    np.maximum.at(max_up, a, lat_up)
    sum_up = np.bincount(a, weights=lat_up, minlength=n_e)
    count = np.bincount(a, minlength=n_e)
    has = count > 0

    lat_e = np.where(has, (s2c + g * max_up) / g, 0.0)
    e_bh = np.where(has & any_cloud, s2c * proto.backhaul_energy_power_w, 0.0)
    e_uplink = g * sum_up * proto.uplink_energy_power_w
    e_d2d = np.zeros(n_e)
    for e in np.flatnonzero(plan.uses_d2d):
        members = np.flatnonzero(a == e)
        root = int(np.flatnonzero(members == plan.aggregator[e])[0])
        graph = prototype_latency_graph(scenario, members, s_edge[e])
        to_root, _ = distances_to(graph, root)
        from_root, pred = distances_from(graph, root)
        arcs = np.flatnonzero(pred >= 0)
        up, down = to_root.max(), from_root.max()
        e_up = proto.d2d_energy_power_w * to_root.sum()
        e_down = proto.d2d_energy_power_w * graph[pred[arcs], arcs].sum()
        loc = lat_up[members].mean()
        lat_e[e] = (s2c[e] + (up + down) * (g - 1) + up + loc) / g
        e_d2d[e] = (e_up + e_down) * (g - 1) + e_up
        e_uplink[e] = loc * proto.uplink_energy_power_w
    energy = zero_parts() | {"uplink": float(e_uplink.sum()), "d2d": float(e_d2d.sum()), "backhaul": float(e_bh.sum())}
    return _metrics(g, float(g * lat_e.max(initial=0.0)), energy, none)


def _metrics(g: int, period_latency: float, energy: dict, stragglers: np.ndarray) -> Metrics:
    """Metrics of the paper accounting (which breaks down neither latency nor bits: those dicts are empty)."""
    total = float(sum(energy.values()))
    return Metrics("paper", g, period_latency, total, period_latency * np.arange(1, g + 1) / g,
                   np.full(g, total / g), energy, {}, {}, stragglers)
