"""One cluster's numbers for the continuous part of a plan, and the link physics used to optimise it.

With the discrete choices fixed (association, modules, tiers, D2D aggregator and tree), clusters are
independent: each must finish its period (``e_agg`` edge rounds plus the backhaul transfer) within a budget
``P`` (s), and the period energy (J) is a sum over clusters. :func:`cluster_data` extracts one cluster's
numbers from a scenario and a plan, in exactly the evaluator's consistent accounting. The convex program of
a D2D cluster is in :mod:`hffm_opt.formulations.tree_program`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..network import trees
from ..network.channel import backhaul_time, shannon_rate
from ..network.scenario import Scenario
from ..network.topology import member_index
from ..plan import AGG, CLOUD, EDGE, Plan


@dataclass(frozen=True)
class ClusterData:
    """One cluster's numbers (local index i over ``members``).

    ``cycles`` C_i per round, ``fmax`` (Hz), ``kappa``, ``pmax`` (W); ``up_bits``/``up_gain``: what device i
    sends each round (to the edge, or to its relay parent) and that link's gain; ``down_bits``/``down_gain``/
    ``down_pmax``: the broadcast from the parent to i (D2D only); ``last_bits``: what the parent broadcasts to i in
    the last round (the aggregator-tier modules of i's subtree; D2D only, at the link's broadcast power);
    ``agg_bits``/``agg_gain``: the aggregator's upload in the last round; ``parent`` local (-1 root / no D2D);
    ``root`` local or -1; ``band_hz`` B_e, ``d2d_band_hz`` B_d, ``noise`` N0 (W/Hz); ``e_agg``; ``fixed_s``/
    ``fixed_j`` time and energy of the period's backhaul transfer and edge downlinks, which no continuous decision
    changes; ``backhaul_s`` and ``downlink_s`` one backhaul transfer and one edge downlink (s), ``edge_bits`` the
    bits aggregated at the edge or above; ``round_cap_s`` the longest an edge round but the period's last may take
    (s, from its start: compute, the climb and the way down; inf = only the period counts).
    """

    edge: int
    members: np.ndarray
    cycles: np.ndarray
    fmax: np.ndarray
    kappa: np.ndarray
    pmax: np.ndarray
    up_bits: np.ndarray
    up_gain: np.ndarray
    down_bits: np.ndarray
    down_gain: np.ndarray
    down_pmax: np.ndarray
    agg_bits: float
    agg_gain: float
    parent: np.ndarray
    root: int
    band_hz: float
    d2d_band_hz: float
    noise: float
    e_agg: int
    fixed_s: float
    fixed_j: float
    backhaul_s: float = 0.0
    downlink_s: float = 0.0
    edge_bits: float = 0.0
    last_bits: np.ndarray | None = None
    round_cap_s: float = np.inf

    @property
    def uses_d2d(self) -> bool:
        return self.root >= 0

    def path_matrix(self) -> np.ndarray:
        """(n, n) 0/1: entry [w, i] = 1 when link i -> parent(i) lies on w's path to the root."""
        n = len(self.members)
        depth = trees.depths(self.parent, np.ones(n, bool), np.array([self.root]))
        onpath = np.eye(n)
        for level in range(1, int(depth.max(initial=0)) + 1):
            nodes = np.flatnonzero(depth == level)
            onpath[nodes] += onpath[self.parent[nodes]]
        onpath[:, self.root] = 0.0
        return onpath


def cluster_data(scenario: Scenario, plan: Plan, e: int, round_cap_s: float = np.inf) -> ClusterData:
    """Extract cluster ``e`` of ``plan`` (consistent accounting; no straggler is planned for), each edge round but
    the last within ``round_cap_s`` (s)."""
    dev, mods, edges = scenario.devices, scenario.module_arrays, scenario.edges
    members = np.flatnonzero(plan.association == e)
    n = len(members)
    x = plan.train[members]
    cycles = plan.round_cycles(scenario, members)
    local = member_index(scenario.n_devices, members)
    root = int(local[plan.aggregator[e]]) if plan.aggregator[e] >= 0 else -1
    parent = np.where(plan.parent[members] >= 0, local[np.maximum(plan.parent[members], 0)], -1)
    gain_up = dev.uplink_gain[members, e]
    trained = x.any(axis=0)
    tier = plan.tier[e]
    agg_bits = edge_bits = float((trained & (tier >= EDGE)) @ mods["update_bits"])
    cloud_bits = float((trained & (tier == CLOUD)) @ mods["update_bits"])
    t_bh = float(backhaul_time(cloud_bits, edges.backhaul_delay_s[e], edges.backhaul_rate_bps[e]))
    r_dl = shannon_rate(edges.bandwidth_hz[e], edges.downlink_power_w[e], gain_up.min() if n else 0.0,
                        scenario.noise_psd_w_per_hz)
    t_dl = agg_bits / r_dl if (r_dl > 0 and agg_bits > 0) else 0.0
    if root >= 0:
        depth = trees.depths(parent, np.ones(n, bool), np.array([root]))
        sub = trees.subtree_or(parent, depth, x)
        down_bits = sub @ mods["update_bits"]
        up_bits = (down_bits if plan.relay_mode == "aggregate"
                   else trees.subtree_sum(parent, depth, x @ mods["update_bits"]))
        child = parent >= 0
        up_gain = np.ones(n)
        down_gain = np.ones(n)
        up_gain[child] = scenario.d2d.gain[scenario.link_lookup(members[child], members[parent[child]])]
        down_gain[child] = scenario.d2d.gain[scenario.link_lookup(members[parent[child]], members[child])]
        up_bits = np.where(child, up_bits, 0.0)
        down_bits = np.where(child, down_bits, 0.0)
        last_bits = np.zeros(n)
        if (trained & (tier == AGG)).any():
            kept = trees.subtree_or(parent, depth, x & (tier == AGG)[None, :]) @ mods["update_bits"]
            last_bits[child] = kept[child]
        down_pmax = np.where(child, dev.pmax_w[members[np.maximum(parent, 0)]], 1.0)
        fixed = t_bh + t_dl
        fixed_j = edges.backhaul_power_w[e] * t_bh + edges.downlink_power_w[e] * t_dl
        agg_gain = float(gain_up[root])
    else:
        up_bits, up_gain = x @ mods["update_bits"], gain_up
        down_bits, down_gain, down_pmax, last_bits = np.zeros(n), np.ones(n), np.ones(n), np.zeros(n)
        fixed = t_bh + plan.e_agg * t_dl
        fixed_j = edges.backhaul_power_w[e] * t_bh + plan.e_agg * edges.downlink_power_w[e] * t_dl
        agg_gain = 1.0
        agg_bits = 0.0
    return ClusterData(edge=e, members=members, cycles=cycles, fmax=dev.cpu_hz[members], kappa=dev.kappa[members],
                       pmax=dev.pmax_w[members], up_bits=up_bits, up_gain=up_gain, down_bits=down_bits,
                       down_gain=down_gain, down_pmax=down_pmax, agg_bits=agg_bits, agg_gain=agg_gain, parent=parent,
                       root=root, band_hz=float(edges.bandwidth_hz[e]), d2d_band_hz=float(scenario.d2d.bandwidth_hz),
                       noise=scenario.noise_psd_w_per_hz, e_agg=int(plan.e_agg), fixed_s=float(fixed),
                       fixed_j=float(fixed_j), backhaul_s=float(t_bh), downlink_s=float(t_dl), edge_bits=edge_bits,
                       last_bits=last_bits, round_cap_s=float(round_cap_s))
