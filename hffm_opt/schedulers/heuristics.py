"""Heuristic schedulers an operations researcher expects beside an optimum: ``greedy`` and ``random``.

Both keep the baselines' module assignment (everything needed is trained, aggregated at the cloud) and
choose, per cluster, direct uploads or a D2D relay tree, then the continuous decisions by a rule:

- ``greedy``: per cluster the D2D aggregator of least eccentricity (longest shortest-path latency into it at
  full power, plus its own upload with the whole band) and its shortest-path tree, kept only if it beats direct
  uploads with an equal bandwidth split; then deadline-filling power: the period of the slowest cluster at full
  power becomes every cluster's budget, and each link stretches its transmission to use its slack (least power
  that still meets the deadline); CPUs run at full speed;
- ``random``: a seeded random choice of D2D or not, aggregator, spanning tree, powers and CPU speeds.
"""

from __future__ import annotations

import numpy as np

from ..formulations.cluster import ClusterData, cluster_data
from ..network.channel import power_for_time, transmit_time
from ..network.scenario import Scenario
from ..network.topology import cluster_links, distances_to
from ..plan import Plan, baseline_plan
from .registry import register


def d2d_latency_graph(scenario: Scenario, members: np.ndarray, bits: float) -> np.ndarray:
    """(n, n) latency (s) of sending ``bits`` on each usable D2D link of a cluster at the sender's full power.

    A link is usable when both directions are listed (the tree's broadcast needs the reverse); inf otherwise.
    """
    d2d = scenario.d2d
    keep, i, j = cluster_links(scenario, members)
    lat = np.full((len(members), len(members)), np.inf)
    lat[i, j] = transmit_time(bits, d2d.bandwidth_hz, scenario.devices.pmax_w[d2d.src[keep]], d2d.gain[keep],
                              scenario.noise_psd_w_per_hz)
    return np.where(np.isfinite(lat.T), lat, np.inf)


def full_power_times(data: ClusterData) -> dict:
    """Transmission times (s) of a cluster at full power and full CPU speed, and its period (s)."""
    g = data.e_agg
    tau = np.where(data.cycles > 0, data.cycles / data.fmax, 0.0)
    if not data.uses_d2d:
        share = data.band_hz / max(len(data.members), 1)
        up = transmit_time(data.up_bits, share, data.pmax, data.up_gain, data.noise)
        return {"tau": tau, "up": up, "band": np.full(len(tau), share),
                "period": g * float((tau + up).max(initial=0.0)) + data.fixed_s}
    path = data.path_matrix()
    up = transmit_time(data.up_bits, data.d2d_band_hz, data.pmax, data.up_gain, data.noise)
    down = transmit_time(data.down_bits, data.d2d_band_hz, data.down_pmax, data.down_gain, data.noise)
    agg = float(transmit_time(data.agg_bits, data.band_hz, data.pmax[data.root], data.agg_gain, data.noise))
    phase_up = float((tau + path @ up).max())
    phase_down = float((path @ down).max())
    return {"tau": tau, "up": up, "down": down, "agg": agg,
            "period": g * phase_up + (g - 1) * phase_down + agg + data.fixed_s}


def _greedy_root(scenario: Scenario, plan: Plan, e: int) -> tuple[int, np.ndarray] | None:
    """(aggregator, parent array over the cluster's members) of least eccentricity, or None if no tree exists."""
    members = np.flatnonzero(plan.association == e)
    if len(members) < 2:
        return None
    bits = float((plan.train[members] @ scenario.module_arrays["update_bits"]).max())
    graph = d2d_latency_graph(scenario, members, bits)
    gain = scenario.devices.uplink_gain[members, e]
    own = transmit_time(bits, scenario.edges.bandwidth_hz[e], scenario.devices.pmax_w[members], gain,
                        scenario.noise_psd_w_per_hz)
    dist, nxt = distances_to(graph, np.arange(len(members)))  # row r: every node to root r
    cost = dist.max(axis=1) + own
    if not np.isfinite(cost).any():
        return None
    r = int(np.argmin(np.where(np.isfinite(cost), cost, np.inf)))  # the first of the least, as a scan would keep
    return int(members[r]), np.where(nxt[r] >= 0, members[np.maximum(nxt[r], 0)], -1)


def _with_tree(plan: Plan, e: int, root: int, parent_of_members: np.ndarray, members: np.ndarray) -> Plan:
    aggregator = plan.aggregator.copy()
    parent = plan.parent.copy()
    aggregator[e] = root
    parent[members] = parent_of_members
    return plan.replace(aggregator=aggregator, parent=parent)


def _link_stretch(data: ClusterData, times: dict, budget_s: float) -> float:
    """The factor phi >= 1 by which a D2D cluster's link times (at full power, ``times``) stretch so that its period
    g max_i(tau_i + phi path_i) + phi ((g - 1) down phase + aggregator upload) + fixed meets ``budget_s`` exactly
    (compute stays at full speed); 1 when even full power misses it. The period is increasing in phi: bisection."""
    g, tau = data.e_agg, times["tau"]
    path_up, down = data.path_matrix() @ times["up"], float((data.path_matrix() @ times["down"]).max())

    def period(phi: float) -> float:
        return g * float((tau + phi * path_up).max()) + phi * ((g - 1) * down + times["agg"]) + data.fixed_s

    if period(1.0) >= budget_s:
        return 1.0
    lo, hi = 1.0, 2.0
    while period(hi) < budget_s and hi < 1e12:
        lo, hi = hi, 2.0 * hi
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if period(mid) <= budget_s else (lo, mid)
    return lo


def fill_deadline(scenario: Scenario, plan: Plan, budget_s: float | None = None) -> Plan:
    """Deadline-filling continuous decisions: full CPU speed, equal band split (the aggregator takes the whole
    band in a D2D cluster), and each transmission stretched to the period budget (default: the slowest cluster's
    period at full power) so it uses the least power that still meets it."""
    datas = [cluster_data(scenario, plan, e) for e in range(scenario.n_edges)]
    times = [full_power_times(d) for d in datas]
    budget = budget_s if budget_s is not None else max(t["period"] for t in times)
    fields = {f: getattr(plan, f).copy() for f in ("cpu_hz", "bandwidth_hz", "power_w", "d2d_power_w",
                                                   "d2d_down_power_w")}
    for d, t in zip(datas, times):
        if len(d.members) == 0:
            continue
        m = d.members
        fields["cpu_hz"][m] = d.fmax
        if not d.uses_d2d:
            round_s = (budget - d.fixed_s) / d.e_agg
            stretch = np.maximum(round_s - t["tau"], t["up"])
            fields["bandwidth_hz"][m] = t["band"]
            fields["power_w"][m] = np.where(d.up_bits > 0, np.minimum(
                power_for_time(d.up_bits, stretch, t["band"], d.up_gain, d.noise), d.pmax), d.pmax)
            continue
        phi = _link_stretch(d, t, budget)
        child = d.parent >= 0
        up_p = np.where(child, np.minimum(power_for_time(d.up_bits, phi * t["up"], d.d2d_band_hz, d.up_gain, d.noise),
                                          d.pmax), 0.0)
        down_p = np.where(child, np.minimum(power_for_time(d.down_bits, phi * t["down"], d.d2d_band_hz, d.down_gain,
                                                           d.noise), d.down_pmax), 0.0)
        fields["d2d_power_w"][m] = np.where(child & (d.up_bits > 0), up_p, d.pmax)
        fields["d2d_down_power_w"][m] = np.where(child & (d.down_bits > 0), down_p, d.down_pmax)
        bw = np.zeros(len(m))
        bw[d.root] = d.band_hz
        pw = np.zeros(len(m))
        pw[d.root] = (min(float(power_for_time(d.agg_bits, phi * t["agg"], d.band_hz, d.agg_gain, d.noise)),
                          d.pmax[d.root]) if d.agg_bits > 0 else d.pmax[d.root])
        fields["bandwidth_hz"][m] = bw
        fields["power_w"][m] = pw
    return plan.replace(**fields)


@register("greedy")
def greedy(scenario: Scenario, *, e_agg: int = 2, seed: int = 0, local_steps: int = 1, batch_size: int = 16) -> Plan:
    """Least-eccentricity aggregator and shortest-path tree where D2D helps, then deadline-filling power."""
    plan = baseline_plan(scenario, mode="hierarchical", e_agg=e_agg, top_tier="cloud", name="greedy",
                         local_steps=local_steps, batch_size=batch_size)
    for e in range(scenario.n_edges):
        found = _greedy_root(scenario, plan, e)
        if found is None:
            continue
        members = np.flatnonzero(plan.association == e)
        trial = _with_tree(plan, e, found[0], found[1], members)
        trial = trial.replace(d2d_down_power_w=np.where(trial.parent >= 0,
                                                        scenario.devices.pmax_w[np.maximum(trial.parent, 0)],
                                                        trial.d2d_down_power_w))
        direct = full_power_times(cluster_data(scenario, plan, e))["period"]
        if full_power_times(cluster_data(scenario, trial, e))["period"] < direct:
            plan = trial
    return fill_deadline(scenario, plan)


@register("random")
def random_plan(scenario: Scenario, *, e_agg: int = 2, seed: int = 0, local_steps: int = 1,
                batch_size: int = 16) -> Plan:
    """A seeded random valid plan: D2D or not per cluster, aggregator, spanning tree, powers, CPU speeds."""
    rng = np.random.default_rng(seed)
    plan = baseline_plan(scenario, mode="hierarchical", e_agg=e_agg, top_tier="cloud", name="random",
                         local_steps=local_steps, batch_size=batch_size)
    for e in range(scenario.n_edges):
        members = np.flatnonzero(plan.association == e)
        if len(members) < 2 or rng.random() < 0.5:
            continue
        graph = d2d_latency_graph(scenario, members, 1.0)
        weights = np.where(np.isfinite(graph), rng.random(graph.shape), np.inf)
        r = int(rng.integers(len(members)))
        dist, nxt = distances_to(weights, r)
        if np.isfinite(dist).all():
            plan = _with_tree(plan, e, int(members[r]), np.where(nxt >= 0, members[np.maximum(nxt, 0)], -1), members)
    d2d_cluster = plan.uses_d2d[plan.association]
    n_e = scenario.n_edges
    counts = np.bincount(plan.association, weights=~d2d_cluster, minlength=n_e)
    dev = scenario.devices
    band = np.where(d2d_cluster, 0.0,
                    scenario.edges.bandwidth_hz[plan.association] / np.maximum(counts[plan.association], 1))
    roots = plan.aggregator[plan.aggregator >= 0]
    band[roots] = scenario.edges.bandwidth_hz[plan.association[roots]]
    pmax_parent = dev.pmax_w[np.maximum(plan.parent, 0)]
    return plan.replace(bandwidth_hz=band, power_w=rng.uniform(0.3, 1.0, scenario.n_devices) * dev.pmax_w,
                        d2d_power_w=rng.uniform(0.3, 1.0, scenario.n_devices) * dev.pmax_w,
                        d2d_down_power_w=rng.uniform(0.3, 1.0, scenario.n_devices) * pmax_parent,
                        cpu_hz=rng.uniform(0.5, 1.0, scenario.n_devices) * dev.cpu_hz)
