"""A proven lower bound on F4's optimum (energy per edge round, J), cluster by cluster, by relaxation.

Given the latency target, a cluster's period must fit the budget P = e_agg x target, and the optimum over every
structure (direct uploads, or any aggregator and spanning relay tree) is at least the smaller of two relaxed
optima, each separable by device and solved exactly per device (:func:`hffm_opt.solvers.fast_kkt.best_split`):

- direct: round R = (P - fixed)/g; device u computes and uploads its own update within R, with the *whole* band
  B_e to itself (the band constraint relaxed): g sum_u min_{tau + t <= R} (kappa C^3/tau^2 + E_u(B_e, t));
- D2D with any root r and tree: up phase U <= (P - backhaul - downlink)/g and, as a node's own hop lies on its
  path, tau_u + t_u <= U; each non-root node sends at least its own update on its best outgoing usable link
  (largest gain) and receives at least its own modules on its best incoming one within (P - ...)/(g - 1);
  the root computes within U and uploads the cluster's edge-level bits with the whole band within the period;
  minimised over the root in closed form.

Every relaxation drops constraints (path lengths, band sharing, link choice) or enlarges bits' time budgets, so
the sum over clusters (divided by e_agg) is a valid lower bound on the optimum.
"""

from __future__ import annotations

import numpy as np

from ...formulations.allocation import AllocationData, CpuBlockData
from ...formulations.cluster import cluster_data
from ...network.channel import link_energy
from ...network.scenario import Scenario
from ...network.topology import link_matrix, usable_links
from ...plan import Plan
from ..fast import kkt as fast_kkt


def split_energy(bits, band_hz, gain, pmax, noise, cycles, kappa, fmax, round_s: float) -> np.ndarray:
    """(n,) least energy (J) of computing ``cycles`` and sending ``bits`` within ``round_s`` per device (inf where
    impossible or the gain is not finite)."""
    n = len(bits)
    usable = np.isfinite(gain) & (gain > 0)
    if round_s <= 0 or n == 0:
        return np.full(n, np.inf)
    link = AllocationData.create(bits, np.where(usable, gain, 1.0), pmax, noise, float(np.max(band_hz)))
    block = CpuBlockData.create(link, np.broadcast_to(band_hz, (n,)), cycles, kappa, fmax, round_s)
    tau_min, comm_min = block.min_times()
    tau, comm = fast_kkt.best_split(block)
    ok = usable & (tau_min + comm_min <= round_s * (1 + 1e-12))  # rounding of a plan exactly at the budget
    return np.where(ok, block.energy(tau, comm), np.inf)


def _best_gains(scenario: Scenario, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n,) largest gain of a usable D2D link out of / into each member (nan where none; both directions needed)."""
    ok = usable_links(scenario, members)
    gain = link_matrix(scenario, members, scenario.d2d.gain)
    gain = np.where(ok, gain, np.nan)
    with np.errstate(all="ignore"):
        out = np.where(ok.any(axis=1), np.nanmax(np.where(ok, gain, -np.inf), axis=1), np.nan)
        into = np.where(ok.any(axis=0), np.nanmax(np.where(ok, gain, -np.inf), axis=0), np.nan)
    return out, into


def cluster_lower_bound(scenario: Scenario, direct_plan: Plan, e: int, budget_s: float) -> float:
    """Lower bound (J per period) on cluster ``e``'s least energy over every structure within ``budget_s``;
    ``direct_plan`` has cluster ``e`` without D2D (the module docstring gives the relaxations)."""
    d = cluster_data(scenario, direct_plan, e)
    n, g = len(d.members), d.e_agg
    if n == 0:
        return 0.0
    args = (d.pmax, d.noise, d.cycles, d.kappa, d.fmax)
    best = g * float(split_energy(d.up_bits, d.band_hz, d.up_gain, *args, (budget_s - d.fixed_s) / g).sum()) + d.fixed_j
    edges = scenario.edges
    avail = budget_s - d.backhaul_s - d.downlink_s
    if avail <= 0:
        return best
    out_gain, in_gain = _best_gains(scenario, d.members)
    up = split_energy(d.up_bits, d.d2d_band_hz, out_gain, *args, avail / g)
    down = np.zeros(n)
    if g > 1:
        with np.errstate(all="ignore"):
            down = np.where(np.isfinite(in_gain), link_energy(d.up_bits, avail / (g - 1), d.d2d_band_hz,
                                                              np.where(np.isfinite(in_gain), in_gain, 1.0), d.noise),
                            np.inf)
    nonroot = g * up + (g - 1) * down
    with np.errstate(divide="ignore"):
        root = g * np.where(d.cycles > 0, d.kappa * d.cycles ** 3 / (avail / g) ** 2, 0.0)
    if d.edge_bits > 0:
        root = root + link_energy(d.edge_bits, avail, d.band_hz, d.up_gain, d.noise)
    finite = np.isfinite(nonroot)
    if (~finite).sum() > 1:  # two devices without a usable link cannot both be the root: no tree exists
        return best
    per_root = float(nonroot[finite].sum()) - np.where(finite, nonroot, 0.0) + root
    if not finite.all():  # the one device without a usable link must be the root
        per_root = np.where(finite, np.inf, per_root)
    fixed_j = edges.backhaul_power_w[e] * d.backhaul_s + edges.downlink_power_w[e] * d.downlink_s
    return min(best, float(per_root.min()) + fixed_j)


def fixed_energy(scenario: Scenario, plan: Plan) -> float:
    """Energy per edge round (J) that no structure or allocation changes, given ``plan``'s modules, tiers and
    association: each cluster's backhaul transfer and one edge downlink per period (a direct cluster pays one per
    round, a D2D cluster one per period, so one is the least)."""
    edges, total = scenario.edges, 0.0
    for e in range(scenario.n_edges):
        d = cluster_data(scenario, plan, e)
        if len(d.members):
            total += edges.backhaul_power_w[e] * d.backhaul_s + edges.downlink_power_w[e] * d.downlink_s
    return total / plan.e_agg


def cluster_bounds(scenario: Scenario, plan: Plan, budget_s: float) -> np.ndarray:
    """(E,) proven lower bound (J per period) on each cluster's least energy within the period budget ``budget_s``
    (s), over every structure, with ``plan``'s module assignment, tiers and association."""
    direct = plan.replace(aggregator=np.full(scenario.n_edges, -1), parent=np.full(scenario.n_devices, -1))
    return np.array([cluster_lower_bound(scenario, direct, e, budget_s) for e in range(scenario.n_edges)])


def lower_bound(scenario: Scenario, plan: Plan, budget_s: float) -> float:
    """Proven lower bound on F4's optimal energy per edge round (J) for the period budget ``budget_s`` (s), with
    ``plan``'s module assignment, tiers, association and e_agg."""
    return float(cluster_bounds(scenario, plan, budget_s).sum()) / plan.e_agg
