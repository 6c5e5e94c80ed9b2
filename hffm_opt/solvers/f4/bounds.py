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
  When every member trains its own module set (clusters of up to :data:`DEPTH_MAX_N`), the same grid is searched
  again with each member's parent's path counted at its least time, per root (:mod:`.depth_bound`), and the
  larger bound kept.

Every relaxation drops constraints (path lengths, band sharing, link choice) or enlarges bits' time budgets, so
the sum over clusters (divided by e_agg) is a valid lower bound on the optimum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...formulations.allocation import AllocationData, CpuBlockData
from ...formulations.cluster import ClusterData, cluster_data
from ...network.channel import link_energy
from ...network.scenario import Scenario
from ...network.topology import link_matrix, usable_links
from ...plan import Plan
from ..fast import kkt as fast_kkt
from .depth_bound import DepthBound

DEPTH_MAX_N = 200  # members: larger clusters skip the relay-depth tightening (its arrays grow as n^2 per point)
DEPTH_CELLS = 12  # cells per axis of the relay-depth search's grid (its points cost n^2 each)
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


@dataclass(frozen=True)
class Units:
    """What a cluster's n members may train, unit by unit (J units: each member's whole module set, or one module
    each when module subsets are free): ``cycles`` and ``bits`` (n, J) per round of unit j on member i, ``able``
    (n, J) bool the pairs allowed, ``need`` (J,) how many members must train unit j. A member with an able unit
    trains at least one; an energy that is convex in a member's load and zero at zero load (compute and every link
    here) is superadditive, so a member's energy for a set of units is at least the sum of its energies for each.
    ``compute_floor`` (J s^2): a lower bound on ``sum_i kappa_i C_i^3`` over every assignment, so the members'
    compute within a time t costs at least ``compute_floor / t^2`` (0: none known); ``compute_s`` (s): no time
    within which the members can do the required work at full speed, sharing it perfectly, is shorter."""

    cycles: np.ndarray
    bits: np.ndarray
    able: np.ndarray
    need: np.ndarray
    compute_floor: float = 0.0
    compute_s: float = 0.0

    @classmethod
    def whole(cls, d: ClusterData) -> "Units":
        """Every member trains its own module set (one unit each, all of them required)."""
        n = len(d.members)
        return cls(d.cycles[:, None], d.up_bits[:, None], np.ones((n, 1), bool), np.array([n]))


def _per_unit(values, n_units: int) -> np.ndarray:
    """(n,) per-member values repeated for each of a member's ``n_units`` units: (n J,), member by member."""
    return np.repeat(np.asarray(values, float), n_units)


def _prefix(sorted_costs: np.ndarray) -> np.ndarray:
    """(..., n + 3, J) sums of the m smallest of each column at index m + 1 (m = -1 .. n + 1): inf at m = -1 and
    m = n + 1 (impossible), 0 at m = 0."""
    shape = sorted_costs.shape[:-2] + (1, sorted_costs.shape[-1])
    inf, zero = np.full(shape, np.inf), np.zeros(shape)
    with np.errstate(invalid="ignore"):
        return np.concatenate([inf, zero, np.cumsum(sorted_costs, axis=-2), inf], axis=-2)


def _smallest_with_root(cost: np.ndarray, root: np.ndarray, need: np.ndarray) -> np.ndarray:
    """(..., n): for each root r, the sum over units j of the ``need[j]`` smallest of column j, where r's entry is
    ``root`` and every other member's is ``cost`` (..., n, J): either r is among them (then the need - 1 smallest
    of the others) or not."""
    order = np.argsort(cost, axis=-2, kind="stable")
    rank = np.argsort(order, axis=-2, kind="stable")
    sums = _prefix(np.take_along_axis(cost, order, axis=-2))

    def others(m: np.ndarray) -> np.ndarray:  # the m smallest of the other members, per root
        at = lambda i: np.take_along_axis(sums, np.broadcast_to(i + 1, sums.shape[:-2] + (1, len(m))), axis=-2)
        with np.errstate(invalid="ignore"):
            out = np.where(rank < m, at(m + 1) - cost, at(m))
        return np.where(np.isnan(out), np.inf, out)  # inf - inf: fewer than m finite entries

    with np.errstate(invalid="ignore"):
        best = np.minimum(others(need), others(need - 1) + root)
    return np.where(need > 0, best, 0.0).sum(axis=-1)


def cover_cost(nonroot: np.ndarray, root: np.ndarray, root_extra: np.ndarray, units: Units) -> np.ndarray:
    """(...) lower bound on the least total over the choice of a root r (it pays ``root`` (..., n, J) per unit and
    ``root_extra`` (..., n)), every other member paying ``nonroot`` (..., n, J) per unit, and every assignment of
    units to members within ``units`` (each member with an able unit trains one or more, unit j is trained by
    ``need[j]`` members); inf where none is possible. The larger of (a) each member's cheapest unit plus the units'
    cheapest trainers at costs less that cheapest unit and (b) the units' cheapest trainers; exact when every unit
    is required of every member (:meth:`Units.whole`)."""
    nonroot, root = np.where(units.able, nonroot, np.inf), np.where(units.able, root, np.inf)
    takes = units.able.any(axis=-1)
    least, least_root = (np.where(takes, c.min(axis=-1), 0.0) for c in (nonroot, root))
    finite = np.isfinite(least)
    rest = np.where(finite, least, 0.0)
    others = rest.sum(axis=-1, keepdims=True) - rest
    alone = (~finite).sum(axis=-1, keepdims=True) - ~finite == 0  # every other member can be a non-root
    each = np.where(alone, others + least_root, np.inf)
    if units.need.tolist() == [units.able.shape[-2]]:  # one unit, required of every member: (a) is exact
        return (each + root_extra).min(axis=-1, initial=np.inf)
    with np.errstate(invalid="ignore"):
        reduced = _smallest_with_root(np.where(takes[..., None], nonroot - least[..., None], nonroot),
                                      np.where(takes[..., None], root - least_root[..., None], root), units.need)
    plain = _smallest_with_root(nonroot, root, units.need)
    total = np.maximum(np.where(np.isnan(each + reduced), np.inf, each + reduced), plain) + root_extra
    return total.min(axis=-1, initial=np.inf)


def tree_lower_bound(scenario: Scenario, d: ClusterData, budget_s: float, levels: int = ZOOM_LEVELS,
                     cells: int = GRID_CELLS, units: Units | None = None) -> float:
    """Lower bound (J per period) on a cluster's least energy over every aggregator and relay tree within
    ``budget_s`` (s); ``d`` is the cluster without D2D, ``units`` what its members train (default: each its own
    module set, :meth:`Units.whole`). The split-period relaxation of the module docstring:
    the up phase U, the down phase D and the aggregator's upload T share what the period leaves,
    ``g U + (g - 1) D + T <= P - backhaul - downlink``. Each term is decreasing in its own time, so over a cell
    ``[U_i, U_i+1] x [D_j, D_j+1]`` of a grid the energy is at least its value at ``U_i+1``, ``D_j+1`` and the
    largest T the cell allows; the bound is the least cell value (:func:`cover_cost` over the root and the units).
    The grid (``cells`` per axis) is zoomed ``levels`` times onto the cells whose bound is no more than the best
    point of the grid (the others cannot hold the minimum); the best bound over the levels is returned. One cell
    gives every phase the whole period. With whole module sets the relay-depth costs of
    :class:`~.depth_bound.DepthBound` are zoomed the same way (their table dense around the plain search's best
    up phase) and the larger of the two bounds is returned."""
    n, g = len(d.members), d.e_agg
    avail = budget_s - d.backhaul_s - d.downlink_s
    if n == 0:
        return 0.0
    if avail <= 0:
        return float("inf")
    units = Units.whole(d) if units is None else units
    n_units = units.bits.shape[1]
    out_gain, in_gain = _best_gains(scenario, d.members)
    has_in = np.isfinite(in_gain)
    cycles, bits = units.cycles.reshape(-1), units.bits.reshape(-1)

    def up_energy(up_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(k, n, J) non-root compute + own hop and root compute, g rounds, for up-phase times ``up_s`` (k,)."""
        k, shape = len(up_s), (len(up_s), n, n_units)
        gain, pmax, kappa, fmax = (np.tile(_per_unit(a, n_units), k) for a in (out_gain, d.pmax, d.kappa, d.fmax))
        sends = split_energy(np.tile(bits, k), d.d2d_band_hz, gain, pmax, d.noise, np.tile(cycles, k), kappa, fmax,
                             np.repeat(up_s, n * n_units))
        return g * sends.reshape(shape), root_compute(up_s)

    def root_compute(up_s: np.ndarray) -> np.ndarray:
        """(k, n, J) the root's compute within up-phase times ``up_s`` (k,), g rounds (inf beyond its full speed)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            ok = up_s[:, None, None] * d.fmax[:, None] >= units.cycles
            compute = np.where(units.cycles > 0, d.kappa[:, None] * units.cycles ** 3 / up_s[:, None, None] ** 2, 0.0)
        return g * np.where(ok, compute, np.inf)

    def down_energy(down_s: np.ndarray) -> np.ndarray:
        """(k, n, J) each non-root receiving its own modules on its best incoming link, g - 1 times."""
        if g == 1:
            return np.zeros((len(down_s), n, n_units))
        with np.errstate(all="ignore"):
            e = link_energy(units.bits, down_s[:, None, None], d.d2d_band_hz,
                            np.where(has_in, in_gain, 1.0)[:, None], d.noise)
        return (g - 1) * np.where(has_in[:, None] & (down_s[:, None, None] > 0), e, np.inf)

    def upload_energy(t: np.ndarray) -> np.ndarray:
        """(..., n) the root's upload of the edge-level bits with the whole band within ``t`` (s)."""
        if d.edge_bits <= 0:
            return np.where(t[..., None] >= 0, 0.0, np.inf) * np.ones(n)
        with np.errstate(all="ignore"):
            e = link_energy(d.edge_bits, t[..., None], d.band_hz, d.up_gain, d.noise)
        return np.where((t[..., None] > 0) & np.isfinite(e), e, np.inf)

    def plain(ups: np.ndarray, downs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        nonroot_up, root_up = up_energy(ups)
        nonroot_down = down_energy(downs)
        left = avail - g * ups[:, None] - (g - 1) * downs[None, :]  # (i, j) time left for the upload at a point
        roots = np.broadcast_to(root_up[:, None], (len(ups), len(downs), n, n_units))
        with np.errstate(divide="ignore", invalid="ignore"):  # (i, 1) the members' compute alone, at its floor
            spread = np.where(units.compute_floor > 0, g * units.compute_floor / ups[:, None] ** 2, 0.0)
            spread = np.where(ups[:, None] < units.compute_s, np.inf, spread)
        points = np.maximum(cover_cost(nonroot_up[:, None] + nonroot_down[None], roots, upload_energy(left), units),
                            spread + upload_energy(left).min(axis=-1))
        per_cell = np.maximum(cover_cost(nonroot_up[1:, None] + nonroot_down[None, 1:], roots[1:, 1:],
                                         upload_energy(left[:-1, :-1]), units),
                              spread[1:] + upload_energy(left[:-1, :-1]).min(axis=-1))
        return points, per_cell

    bound, focus_s = _zoom(plain, avail, g, levels, cells)
    if units.need.tolist() == [n] and n_units == 1 and 1 < n <= DEPTH_MAX_N and np.isfinite(bound):
        depth = DepthBound(scenario, d, focus_s, avail / g, split_energy)

        def deep(ups: np.ndarray, downs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            up = g * depth.up_costs(ups).sum(axis=-1) + root_compute(ups)[:, :, 0]  # (i, r)
            down = (g - 1) * depth.down_costs(downs).sum(axis=-1) if g > 1 else np.zeros((len(downs), n))
            left = avail - g * ups[:, None] - (g - 1) * downs[None, :]
            points = (up[:, None] + down[None] + upload_energy(left)).min(axis=-1)
            per_cell = (up[1:, None] + down[None, 1:] + upload_energy(left[:-1, :-1])).min(axis=-1)
            return points, per_cell

        bound = max(bound, _zoom(deep, avail, g, levels, min(cells, DEPTH_CELLS))[0])
    edges = scenario.edges
    return bound + edges.backhaul_power_w[d.edge] * d.backhaul_s + edges.downlink_power_w[d.edge] * d.downlink_s


def _zoom(cells_at, avail: float, g: int, levels: int, cells: int) -> tuple[float, float]:
    """The least cell bound of ``cells_at(ups, downs) -> (point values (i, j), cell bounds (i - 1, j - 1))`` over
    the split-period grid (``cells`` per axis), zoomed ``levels`` times onto the cells that may hold the minimum
    (:func:`tree_lower_bound`), and the up phase (s) of the last level's best cell."""
    u_lo, u_hi, d_lo, d_hi = 0.0, avail / g, 0.0, (avail / (g - 1) if g > 1 else 0.0)
    bound, focus = -np.inf, avail / g
    for _ in range(levels):
        ups, downs = np.linspace(u_lo, u_hi, cells + 1), np.linspace(d_lo, d_hi, cells + 1)
        points, per_cell = cells_at(ups, downs)
        best_cell, best_point = float(per_cell.min()), float(points.min())
        bound = max(bound, best_cell)
        if np.isfinite(best_cell):
            focus = float(ups[np.unravel_index(np.argmin(per_cell), per_cell.shape)[0] + 1])
        if not np.isfinite(best_cell) or best_point - best_cell <= ZOOM_RTOL * best_point:
            break
        ii, jj = np.nonzero(per_cell <= best_point)
        u_lo, u_hi, d_lo, d_hi = ups[ii.min()], ups[ii.max() + 1], downs[jj.min()], downs[jj.max() + 1]
    return bound, focus


def cluster_lower_bound(scenario: Scenario, direct_plan: Plan, e: int, budget_s: float,
                        direct_floor: float = 0.0, units: Units | None = None) -> float:
    """Lower bound (J per period) on cluster ``e``'s least energy over every structure within ``budget_s``;
    ``direct_plan`` has cluster ``e`` without D2D (its modules and tiers give the fixed transfers); ``units`` what
    the members train (default: the plan's module sets); ``direct_floor`` is a known floor of its direct uploads
    (their certified optimum, when priced). The smaller of the direct and the tree bounds (module docstring)."""
    d = cluster_data(scenario, direct_plan, e)
    if len(d.members) == 0:
        return 0.0
    units = Units.whole(d) if units is None else units
    n, n_units = units.bits.shape
    g = d.e_agg
    round_s = (budget_s - d.fixed_s) / g
    gain, pmax, kappa, fmax = (_per_unit(a, n_units) for a in (d.up_gain, d.pmax, d.kappa, d.fmax))
    sends = split_energy(units.bits.reshape(-1), d.band_hz, gain, pmax, d.noise, units.cycles.reshape(-1), kappa,
                         fmax, round_s)
    costs = g * sends.reshape(n, n_units)
    spread = g * units.compute_floor / round_s ** 2 if round_s > 0 and round_s >= units.compute_s else np.inf
    relaxed = max(float(cover_cost(costs, costs, np.zeros(n), units)), spread) + d.fixed_j
    return min(max(relaxed, direct_floor), tree_lower_bound(scenario, d, budget_s, units=units))


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
