"""A proven lower bound on F4's optimum (energy per edge round, J), cluster by cluster, by relaxation.

Given the latency target, a cluster's period must fit the budget P = e_agg x target, and the optimum over every
structure (direct uploads, or any aggregator and spanning relay tree) is at least the smaller of two bounds:

- direct: round R = (P - fixed)/g; device u computes and uploads its own update within R, with the *whole* band
  B_e to itself (the band constraint relaxed): g sum_u min_{tau + t <= R} (kappa C^3/tau^2 + E_u(B_e, t)),
  solved exactly per device (:func:`hffm_opt.solvers.fast.kkt.best_split`); or, when larger, a floor the caller
  knows (the direct structure's certified optimum, priced by F4 anyway);
- any root r and relay tree (split period): the up phase U, the down phase D and the root's upload T share the
  period, g U + (g - 1) D + T <= P - backhaul - downlink. As a node's own hop lies on its path, tau_u + t_u <= U;
  each non-root node sends at least its own update on its best outgoing usable link (largest gain) and receives
  at least its own modules on its best incoming one within D; the root computes within U and uploads the
  cluster's edge-level bits with the whole band within T; minimised over the root in closed form and over
  (U, D, T) on a zoomed grid whose every cell is bounded by its most generous corner (:func:`tree_lower_bound`).

Every relaxation drops constraints (path lengths, band sharing, link choice) or enlarges bits' time budgets, so
the sum over clusters (divided by e_agg) is a valid lower bound on the optimum.
"""

from __future__ import annotations

import numpy as np

from ...formulations.allocation import AllocationData, CpuBlockData
from ...formulations.cluster import ClusterData, cluster_data
from ...network.channel import link_energy
from ...network.scenario import Scenario
from ...network.topology import link_matrix, usable_links
from ...plan import Plan
from ..fast import kkt as fast_kkt

GRID_CELLS = 16  # cells per axis of the split-period grid of :func:`tree_lower_bound`, at each zoom level
ZOOM_LEVELS = 4  # zoom levels of that grid at most
ZOOM_RTOL = 1e-3  # zooming stops when the least cell bound is this close to the grid's best point (relative)


def best_split(bits, band_hz, gain, pmax, noise, cycles, kappa, fmax, round_s) -> tuple:
    """Per device, the least energy (J) of computing ``cycles`` and sending ``bits`` within ``round_s`` (s; one for
    all or one per device) and its compute and send times (s): ((n,) energy, inf where impossible, the round is not
    positive or the gain is not finite; (n,) compute time; (n,) send time)."""
    n = len(bits)
    rounds = np.broadcast_to(np.asarray(round_s, dtype=float), (n,))
    usable = np.isfinite(gain) & (gain > 0) & (rounds > 0)
    if n == 0 or not usable.any():
        return np.full(n, np.inf), np.zeros(n), np.zeros(n)
    link = AllocationData.create(bits, np.where(usable, gain, 1.0), pmax, noise, float(np.max(band_hz)))
    block = CpuBlockData.create(link, np.broadcast_to(band_hz, (n,)), cycles, kappa, fmax,
                                np.where(usable, rounds, 1.0))
    tau_min, comm_min = block.min_times()
    tau, comm = fast_kkt.best_split(block)
    ok = usable & (tau_min + comm_min <= rounds * (1 + 1e-12))  # rounding of a plan exactly at the budget
    return np.where(ok, block.energy(tau, comm), np.inf), tau, comm


def split_energy(bits, band_hz, gain, pmax, noise, cycles, kappa, fmax, round_s) -> np.ndarray:
    """(n,) least energy (J) of :func:`best_split`."""
    return best_split(bits, band_hz, gain, pmax, noise, cycles, kappa, fmax, round_s)[0]


def _best_gains(scenario: Scenario, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n,) largest gain of a usable D2D link out of / into each member (nan where none; both directions needed)."""
    ok = usable_links(scenario, members)
    gain = link_matrix(scenario, members, scenario.d2d.gain)
    gain = np.where(ok, gain, np.nan)
    with np.errstate(all="ignore"):
        out = np.where(ok.any(axis=1), np.nanmax(np.where(ok, gain, -np.inf), axis=1), np.nan)
        into = np.where(ok.any(axis=0), np.nanmax(np.where(ok, gain, -np.inf), axis=0), np.nan)
    return out, into


def _best_root(nonroot: np.ndarray, root: np.ndarray) -> np.ndarray:
    """(...,) least energy over the choice of root: every device but the root pays ``nonroot`` (..., n), the root
    pays ``root`` (..., n); inf where no root is possible (a device that cannot be a non-root must be the root)."""
    finite = np.isfinite(nonroot)
    rest = np.where(finite, nonroot, 0.0)
    per_root = rest.sum(axis=-1, keepdims=True) - rest + root
    alone = (~finite).sum(axis=-1, keepdims=True) - ~finite == 0  # every other device can be a non-root
    return np.where(alone & np.isfinite(per_root), per_root, np.inf).min(axis=-1, initial=np.inf)


def tree_lower_bound(scenario: Scenario, d: ClusterData, budget_s: float, levels: int = ZOOM_LEVELS,
                     cells: int = GRID_CELLS) -> float:
    """Lower bound (J per period) on a cluster's least energy over every aggregator and relay tree within
    ``budget_s`` (s); ``d`` is the cluster without D2D. The split-period relaxation of the module docstring:
    the up phase U, the down phase D and the aggregator's upload T share what the period leaves,
    ``g U + (g - 1) D + T <= P - backhaul - downlink``. Each term is decreasing in its own time, so over a cell
    ``[U_i, U_i+1] x [D_j, D_j+1]`` of a grid the energy is at least its value at ``U_i+1``, ``D_j+1`` and the
    largest T the cell allows; the bound is the least cell value. The grid (``cells`` per axis) is zoomed
    ``levels`` times onto the cells whose bound is no more than the best point of the grid (the others cannot
    hold the minimum); the best bound over the levels is returned. One cell gives every phase the whole period."""
    n, g = len(d.members), d.e_agg
    avail = budget_s - d.backhaul_s - d.downlink_s
    if n == 0:
        return 0.0
    if avail <= 0:
        return float("inf")
    out_gain, in_gain = _best_gains(scenario, d.members)
    has_in = np.isfinite(in_gain)

    def up_energy(up_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(k, n) non-root compute + own hop and root compute, g rounds, for up-phase times ``up_s`` (k,)."""
        k = len(up_s)
        sends = split_energy(np.tile(d.up_bits, k), d.d2d_band_hz, np.tile(out_gain, k), np.tile(d.pmax, k), d.noise,
                             np.tile(d.cycles, k), np.tile(d.kappa, k), np.tile(d.fmax, k), np.repeat(up_s, n))
        with np.errstate(divide="ignore", invalid="ignore"):
            ok = up_s[:, None] * d.fmax >= d.cycles
            compute = np.where(d.cycles > 0, d.kappa * d.cycles ** 3 / up_s[:, None] ** 2, 0.0)
        return g * sends.reshape(k, n), g * np.where(ok, compute, np.inf)

    def down_energy(down_s: np.ndarray) -> np.ndarray:
        """(k, n) each non-root receiving its own modules on its best incoming link, g - 1 times."""
        if g == 1:
            return np.zeros((len(down_s), n))
        with np.errstate(all="ignore"):
            e = link_energy(d.up_bits, down_s[:, None], d.d2d_band_hz, np.where(has_in, in_gain, 1.0), d.noise)
        return (g - 1) * np.where(has_in & (down_s[:, None] > 0), e, np.inf)

    def upload_energy(t: np.ndarray) -> np.ndarray:
        """(..., n) the root's upload of the edge-level bits with the whole band within ``t`` (s)."""
        if d.edge_bits <= 0:
            return np.where(t[..., None] >= 0, 0.0, np.inf) * np.ones(n)
        with np.errstate(all="ignore"):
            e = link_energy(d.edge_bits, t[..., None], d.band_hz, d.up_gain, d.noise)
        return np.where((t[..., None] > 0) & np.isfinite(e), e, np.inf)

    u_lo, u_hi, d_lo, d_hi = 0.0, avail / g, 0.0, (avail / (g - 1) if g > 1 else 0.0)
    bound = -np.inf
    for _ in range(levels):
        ups, downs = np.linspace(u_lo, u_hi, cells + 1), np.linspace(d_lo, d_hi, cells + 1)
        nonroot_up, root_up = up_energy(ups)
        nonroot_down = down_energy(downs)
        left = avail - g * ups[:, None] - (g - 1) * downs[None, :]  # (i, j) time left for the upload at a point
        points = _best_root(nonroot_up[:, None] + nonroot_down[None], root_up[:, None] + upload_energy(left))
        per_cell = _best_root(nonroot_up[1:, None] + nonroot_down[None, 1:],
                              root_up[1:, None] + upload_energy(left[:-1, :-1]))
        best_cell, best_point = float(per_cell.min()), float(points.min())
        bound = max(bound, best_cell)
        if not np.isfinite(best_cell) or best_point - best_cell <= ZOOM_RTOL * best_point:
            break
        ii, jj = np.nonzero(per_cell <= best_point)
        u_lo, u_hi, d_lo, d_hi = ups[ii.min()], ups[ii.max() + 1], downs[jj.min()], downs[jj.max() + 1]
    edges = scenario.edges
    return bound + edges.backhaul_power_w[d.edge] * d.backhaul_s + edges.downlink_power_w[d.edge] * d.downlink_s


def cluster_lower_bound(scenario: Scenario, direct_plan: Plan, e: int, budget_s: float,
                        direct_floor: float = 0.0) -> float:
    """Lower bound (J per period) on cluster ``e``'s least energy over every structure within ``budget_s``;
    ``direct_plan`` has cluster ``e`` without D2D; ``direct_floor`` is a known floor of its direct uploads (their
    certified optimum, when priced). The smaller of the direct and the tree bounds (module docstring)."""
    d = cluster_data(scenario, direct_plan, e)
    if len(d.members) == 0:
        return 0.0
    g = d.e_agg
    relaxed = g * float(split_energy(d.up_bits, d.band_hz, d.up_gain, d.pmax, d.noise, d.cycles, d.kappa, d.fmax,
                                     (budget_s - d.fixed_s) / g).sum()) + d.fixed_j
    return min(max(relaxed, direct_floor), tree_lower_bound(scenario, d, budget_s))


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
