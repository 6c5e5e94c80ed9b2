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
(``t_bh``, ``t_dl`` above are these least times). The least total over associations and cluster modes is the
program of :mod:`hffm_opt.formulations.association_relaxation`, solved on HiGHS; its proven bound (the best bound
when the time limit stops it), divided by ``g``, is the bound. The least fixed energy alone (the edge cover of the
same module) is returned too, and bounds the total from below as well. Energies in J, times in s, bandwidths in Hz.
"""

from __future__ import annotations

import numpy as np

from ...formulations.association_relaxation import build_association_relaxation, build_edge_cover
from ...formulations.joint import edge_allowed
from ...formulations.milp_model import MilpModel
from ...network.channel import backhaul_time, link_energy, min_bandwidth, shannon_rate
from ...network.scenario import Scenario
from ...network.topology import d2d_components, link_matrix, usable_links
from ...plan import Plan
from ..milp import solve_milp
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
        t_bh = backhaul_time(bits, edges.backhaul_delay_s, edges.backhaul_rate_bps)
        rate = shannon_rate(edges.bandwidth_hz, edges.downlink_power_w, np.where(gain > 0, gain, 1.0),
                            scenario.noise_psd_w_per_hz)
        t_dl = np.where((bits > 0) & (gain > 0) & (rate > 0), bits / rate, 0.0)  # as the evaluator: no rate, no time
    return t_bh, t_dl, edges.backhaul_power_w * t_bh, edges.downlink_power_w * t_dl


def device_costs(scenario: Scenario, plan: Plan, candidates: np.ndarray, direct_s: np.ndarray,
                 tree_s: np.ndarray, loads: tuple[np.ndarray, np.ndarray] | None = None) -> tuple:
    """(U, E) arrays (inf where not a candidate or impossible): least energy per period (J) as a direct member, the
    least band (Hz) a direct member needs, the least energy as a tree member that is not the aggregator, and as the
    aggregator; ``direct_s`` and ``tree_s`` (E,) the period less the least fixed times of each mode (s); ``loads``
    (bits, cycles) (U,) per round, default ``plan``'s."""
    dev, g = scenario.devices, plan.e_agg
    shape = candidates.shape
    direct, band, member, root = (np.full(shape, np.inf) for _ in range(4))
    bits, cycles = loads if loads is not None else (plan.train @ scenario.module_arrays["update_bits"],
                                                     plan.round_cycles(scenario))
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


def _proven(model: MilpModel, time_limit: float) -> float:
    """HiGHS's proven lower bound on ``model``'s optimum (0 when it proves nothing; inf when infeasible)."""
    if model.precheck_message:
        return float("inf")
    res = solve_milp(model, "highs", time_limit=time_limit, mip_gap=1e-6)
    if res.status == "infeasible":
        return float("inf")
    return max(res.bound, 0.0) if res.bound is not None else 0.0


def association_bound(scenario: Scenario, plan: Plan, budget_s: float, candidates: np.ndarray, edge_tiers: bool,
                      time_limit: float = TIME_LIMIT_S, loads: tuple[np.ndarray, np.ndarray] | None = None
                      ) -> tuple[float, float]:
    """(proven lower bound on the energy per edge round (J), the least fixed energy per edge round any association
    pays (J)) over every association within ``candidates`` (U, E) bool, cluster mode and structure, tier choice
    (``edge_tiers`` as full F4 takes it) and continuous decisions, for ``plan``'s module assignment and e_agg within
    the period budget ``budget_s`` (s); the bound is inf when some device has no candidate edge where any role
    meets the budget (module docstring). ``loads`` (bits, cycles) (U,) per round lower each device's own load
    (default: ``plan``'s modules)."""
    g = plan.e_agg
    t_bh, t_dl, e_bh, e_dl = edge_fixed(scenario, plan, candidates, edge_tiers)
    direct, band, member, root = device_costs(scenario, plan, candidates, budget_s - t_bh - g * t_dl,
                                              budget_s - t_bh - t_dl, loads)
    comp = d2d_components(scenario)
    least_fixed = _proven(build_edge_cover(candidates, e_bh + e_dl), time_limit) / g
    tree_member = np.where(np.isfinite(member), member, root)  # a device with no member role can only aggregate
    open_tree = {}
    for e in range(scenario.n_edges):
        us = np.flatnonzero(np.isfinite(tree_member[:, e]))
        for c in np.unique(comp[us]):
            inside = us[comp[us] == c]
            with np.errstate(invalid="ignore"):
                saving = np.where(np.isfinite(member[inside, e]) & np.isfinite(root[inside, e]),
                                  np.maximum(member[inside, e] - root[inside, e], 0.0), 0.0).max()
            open_tree[(e, int(c))] = float(e_bh[e] + e_dl[e] - saving)
    model = build_association_relaxation(direct, band, tree_member, comp, e_bh + g * e_dl, open_tree,
                                         scenario.edges.bandwidth_hz, name=f"association relaxation of {scenario.name}")
    return max(_proven(model, time_limit) / g, least_fixed), least_fixed  # device costs are never negative
