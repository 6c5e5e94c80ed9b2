"""A proven lower bound on F4's energy per edge round when the association is free (each device may join any of
its candidate edges) as well as the structures, tiers and continuous decisions, with the module assignment fixed
(coverage ``"full"``).

A cluster either uploads straight to its edge (direct) or aggregates over one relay tree, whose members must all
lie in one connected component of the usable D2D links (a tree spans its members over their links). Relaxed, per
device and per candidate edge:

- direct member: its compute and upload within the round ``(P - t_bh - g t_dl) / g`` with the edge's whole band;
  and the band it needs at least (full power, full CPU speed), summed over the direct members, fits the edge's band;
- tree member: its compute and its own hop on its best usable D2D link to another candidate of that edge within
  ``(P - t_bh - t_dl) / g`` (the up phase at most), plus receiving its own modules on its best incoming link within
  ``(P - t_bh - t_dl) / (g - 1)`` (the down phase at most), ``g - 1`` times; the aggregator pays at least its
  compute within the up phase (its upload left out), and a tree has one, so a tree saves at most the largest such
  saving among its component's candidates (a device with no member role there is charged the aggregator's).

An edge with members pays at least its fixed energy per period: one backhaul transfer of the fewest cloud-bound
bits any candidate trains (the modules that may stay in the cluster, :func:`~hffm_opt.formulations.joint.
edge_allowed`, left out) and one edge downlink of them at the best candidate's gain, ``g`` downlinks when direct
(``t_bh``, ``t_dl`` above are these least times). The least total over associations and cluster modes is a mixed
integer program (an edge closed, direct, or a tree in one component; each device in one open candidate edge in a
role its mode allows), solved by HiGHS (scipy); its proven dual bound, divided by ``g``, is the bound. Energies in
J, times in s, bandwidths in Hz. The least fixed energy alone (a set cover of the devices by open edges) is
returned too, and bounds the total from below as well (a solver stopped at its time limit may prove less).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ...formulations.cluster import round_cycles
from ...formulations.joint import edge_allowed
from ...network.channel import link_energy, min_bandwidth, shannon_rate
from ...network.scenario import Scenario
from ...network.topology import link_matrix, usable_links
from ...plan import Plan
from .bounds import split_energy

TIME_LIMIT_S = 30.0  # the program's time limit: its dual bound is valid whenever it stops


def edge_fixed(scenario: Scenario, plan: Plan, candidates: np.ndarray, edge_tiers: bool) -> tuple:
    """(E,) least backhaul time (s), (E,) least downlink time (s) and (E,) their energies per transfer (J) of each
    edge with members."""
    edges, mods = scenario.edges, scenario.module_arrays
    cloud = (plan.train & ~edge_allowed(scenario, edge_tiers)[None, :]) @ mods["update_bits"]  # (U,)
    bits = np.where(candidates, cloud[:, None], np.inf).min(axis=0)
    bits = np.where(np.isfinite(bits), bits, 0.0)
    gain = np.where(candidates, scenario.devices.uplink_gain, -np.inf).max(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_bh = np.where(bits > 0, edges.backhaul_delay_s + bits / edges.backhaul_rate_bps, 0.0)
        rate = shannon_rate(edges.bandwidth_hz, edges.downlink_power_w, np.where(gain > 0, gain, 1.0),
                            scenario.noise_psd_w_per_hz)
        t_dl = np.where((bits > 0) & (gain > 0) & (rate > 0), bits / rate, 0.0)  # as the evaluator: no rate, no time
    return t_bh, t_dl, edges.backhaul_power_w * t_bh, edges.downlink_power_w * t_dl


def device_costs(scenario: Scenario, plan: Plan, candidates: np.ndarray, direct_s: np.ndarray,
                 tree_s: np.ndarray) -> tuple:
    """(U, E) arrays (inf where not a candidate or impossible): least energy per period (J) as a direct member, the
    least band (Hz) a direct member needs, the least energy as a tree member that is not the aggregator, and as the
    aggregator; ``direct_s`` and ``tree_s`` (E,) the period less the least fixed times of each mode (s)."""
    dev, g = scenario.devices, plan.e_agg
    shape = candidates.shape
    direct, band, member, root = (np.full(shape, np.inf) for _ in range(4))
    bits = plan.train @ scenario.module_arrays["update_bits"]
    cycles = round_cycles(scenario, plan, np.arange(shape[0]))
    noise = scenario.noise_psd_w_per_hz
    for e in np.flatnonzero(candidates.any(axis=0)):
        us = np.flatnonzero(candidates[:, e])

        def split(band_hz, gain, round_s):
            return g * split_energy(bits[us], band_hz, gain, dev.pmax_w[us], noise, cycles[us], dev.kappa[us],
                                    dev.cpu_hz[us], round_s)

        if direct_s[e] > 0:
            round_s = direct_s[e] / g
            direct[us, e] = split(scenario.edges.bandwidth_hz[e], dev.uplink_gain[us, e], round_s)
            with np.errstate(all="ignore"):
                need = min_bandwidth(bits[us], round_s - cycles[us] / dev.cpu_hz[us], dev.pmax_w[us],
                                     dev.uplink_gain[us, e], noise)
            band[us, e] = np.where(np.isfinite(direct[us, e]), need, np.inf)
        if tree_s[e] > 0:
            round_s = tree_s[e] / g
            ok = usable_links(scenario, us)
            gain = np.where(ok, link_matrix(scenario, us, scenario.d2d.gain), -np.inf)
            out, into = gain.max(axis=1, initial=-np.inf), gain.max(axis=0, initial=-np.inf)
            cost = split(scenario.d2d.bandwidth_hz, np.where(np.isfinite(out), out, np.nan), round_s)
            if g > 1:
                with np.errstate(all="ignore"):
                    receive = link_energy(bits[us], tree_s[e] / (g - 1), scenario.d2d.bandwidth_hz,
                                          np.where(np.isfinite(into), into, 1.0), noise)
                cost = cost + (g - 1) * np.where(np.isfinite(into), receive, np.inf)
            member[us, e] = cost
            with np.errstate(divide="ignore"):
                alone = np.where(cycles[us] > 0, g * dev.kappa[us] * cycles[us] ** 3 / round_s ** 2, 0.0)
            root[us, e] = np.where(cycles[us] <= round_s * dev.cpu_hz[us], alone, np.inf)
    return direct, band, member, root


def d2d_components(scenario: Scenario) -> np.ndarray:
    """(U,) the connected component of each device in the graph of usable D2D links (both directions listed)."""
    d2d, n = scenario.d2d, scenario.n_devices
    graph = coo_matrix((np.ones(len(d2d.src)), (d2d.src, d2d.dst)), shape=(n, n)).tocsr()
    both = graph.minimum(graph.T)
    return connected_components(both, directed=False)[1]


class _Program:
    """A 0/1 program built column by column: ``add(cost)`` returns the new columns' indices; ``row`` adds a
    constraint ``lo <= sum coef x[cols] <= hi``."""

    def __init__(self):
        self.cost, self.rows, self.cols, self.vals, self.lo, self.hi = [], [], [], [], [], []

    def add(self, cost) -> np.ndarray:
        start = sum(len(c) for c in self.cost)
        self.cost.append(np.atleast_1d(np.asarray(cost, dtype=float)))
        return np.arange(start, start + len(self.cost[-1]))

    def row(self, cols, coef, lo: float, hi: float) -> None:
        cols = np.atleast_1d(cols)
        self.rows.append(np.full(len(cols), len(self.lo)))
        self.cols.append(cols)
        self.vals.append(np.broadcast_to(np.asarray(coef, dtype=float), cols.shape))
        self.lo.append(lo)
        self.hi.append(hi)

    def dual_bound(self, time_limit: float) -> float:
        """HiGHS's proven lower bound on the least cost (0 when it proves nothing)."""
        cost = np.concatenate(self.cost)
        a = coo_matrix((np.concatenate(self.vals), (np.concatenate(self.rows), np.concatenate(self.cols))),
                       shape=(len(self.lo), len(cost))).tocsr()
        res = milp(cost, integrality=np.ones(len(cost)), bounds=Bounds(0, 1),
                   constraints=LinearConstraint(a, self.lo, self.hi), options={"time_limit": time_limit})
        bound = getattr(res, "mip_dual_bound", None)
        if res.status not in (0, 1) or bound is None or not np.isfinite(bound):
            return 0.0
        return max(float(bound), 0.0)


def association_bound(scenario: Scenario, plan: Plan, budget_s: float, candidates: np.ndarray, edge_tiers: bool,
                      time_limit: float = TIME_LIMIT_S) -> tuple[float, float]:
    """(proven lower bound on the energy per edge round (J), the least fixed energy per edge round any association
    pays (J)) over every association within ``candidates`` (U, E) bool, cluster mode and structure, tier choice
    (``edge_tiers`` as full F4 takes it) and continuous decisions, for ``plan``'s module assignment and e_agg within
    the period budget ``budget_s`` (s); the bound is inf when some device has no candidate edge where any role
    meets the budget (module docstring)."""
    g = plan.e_agg
    t_bh, t_dl, e_bh, e_dl = edge_fixed(scenario, plan, candidates, edge_tiers)
    direct, band, member, root = device_costs(scenario, plan, candidates, budget_s - t_bh - g * t_dl,
                                              budget_s - t_bh - t_dl)
    comp = d2d_components(scenario)
    cover = _Program()
    opened = cover.add(e_bh + e_dl)
    for u in range(scenario.n_devices):
        cover.row(opened[candidates[u]], 1.0, 1.0, np.inf)
    least_fixed = cover.dual_bound(time_limit) / g
    tree_member = np.where(np.isfinite(member), member, root)  # a device with no member role can only aggregate
    if not (np.isfinite(direct) | np.isfinite(tree_member)).any(axis=1).all():
        return float("inf"), least_fixed
    prog = _Program()
    assigned = [[] for _ in range(scenario.n_devices)]
    for e in range(scenario.n_edges):
        us = np.flatnonzero(candidates[:, e])
        if len(us) == 0:
            continue
        modes = []
        ok = np.isfinite(direct[us, e])
        if ok.any():
            mode = prog.add(e_bh[e] + g * e_dl[e])[0]
            xs = prog.add(direct[us[ok], e])
            for x, x_u in zip(xs, us[ok]):
                prog.row([x, mode], [1.0, -1.0], -np.inf, 0.0)  # a direct member needs the direct mode
                assigned[x_u].append(x)
            prog.row(np.append(xs, mode), np.append(band[us[ok], e], -scenario.edges.bandwidth_hz[e]), -np.inf, 0.0)
            modes.append(mode)
        for c in np.unique(comp[us]):
            inside = us[(comp[us] == c) & np.isfinite(tree_member[us, e])]
            if len(inside) == 0:
                continue
            with np.errstate(invalid="ignore"):
                saving = np.where(np.isfinite(member[inside, e]) & np.isfinite(root[inside, e]),
                                  np.maximum(member[inside, e] - root[inside, e], 0.0), 0.0).max()
            mode = prog.add(e_bh[e] + e_dl[e] - saving)[0]
            for x, x_u in zip(prog.add(tree_member[inside, e]), inside):
                prog.row([x, mode], [1.0, -1.0], -np.inf, 0.0)
                assigned[x_u].append(x)
            modes.append(mode)
        if modes:
            prog.row(modes, 1.0, 0.0, 1.0)  # one mode per edge
    for xs in assigned:
        prog.row(xs, 1.0, 1.0, 1.0)
    return max(prog.dual_bound(time_limit) / g, least_fixed), least_fixed  # device costs are never negative
