"""The convex program of a D2D cluster's continuous decisions (F3 with the CPU block and D2D link times).

cvxpy, exponential cones scaled around reference times; see :func:`tree_problem` for the model. Times in s,
energy in J.
"""

from __future__ import annotations

from dataclasses import dataclass

import cvxpy as cp
import numpy as np

from ..network.channel import LN2, transmit_time
from .cluster import ClusterData


@dataclass
class TreeProblem:
    """A D2D cluster's convex program and the variables to read back (times in s)."""

    problem: cp.Problem
    compute_s: cp.Variable
    up_s: cp.Variable
    down_s: cp.Variable | None
    agg_s: cp.Variable


def _energy_term(t, bits, band_hz, gain, noise, t_ref, weight=1.0):
    """Convex expression of the links' energy at times ``t``, each link's weighted by ``weight`` (>= 0), scaled
    around ``t_ref`` (exp cone via cvxpy atoms).

    (N0 B/g)(t e^(k/t) - t) with k = S ln2 / B, written as c e^(k/t_ref) * t e^(k/t - k/t_ref) - c t, so that
    the cone variable is of the order of t near t_ref.
    """
    k = bits * LN2 / band_hz
    kr = k / t_ref
    coef = weight * noise * band_hz / gain
    z = cp.Variable(len(bits), nonneg=True)
    cone = cp.constraints.ExpCone(k - cp.multiply(kr, t), t, z)
    return coef * np.exp(kr) @ z - coef @ t, cone


def tree_problem(data: ClusterData, budget_s: float, round_cap_s: float = np.inf) -> TreeProblem:
    """Minimum period energy of a D2D cluster whose period must end within ``budget_s`` and each edge round but the
    last within ``round_cap_s`` (``U + D <= round_cap_s`` when ``e_agg`` > 1).

    Variables: compute times tau_i (CPU f_i = C_i/tau_i), up-link times t_i (i -> parent), down-link times
    s_i (parent -> i), the aggregator's upload time t_a, the phase lengths U and D. Constraints:
    tau_i >= C_i/fmax_i; t_i, s_i, t_a no shorter than at full power; tau_w + sum_{i on w's path} t_i <= U
    (in-network aggregation: a node sends once its subtree is in); sum_{i on w's path} s_i <= D;
    e_agg U + (e_agg - 1) D + t_a + fixed <= budget. Objective (J): e_agg (sum kappa C^3/tau^2 + sum E(t_i))
    + (e_agg - 1) sum E(s_i) + E_a(t_a), E the least energy of a link for a time (convex, decreasing).
    Aggregator-tier modules are broadcast down the tree in the last round too, at each link's broadcast power: link i
    then takes ``rho_i s_i`` (``rho_i`` = last-round bits / broadcast bits) and costs ``rho_i E(s_i)``, and the last
    round ends ``max(0, max_w sum_{i on w's path} rho_i s_i - t_dl)`` later than with the edge downlink alone.
    The exponential cones are scaled around twice each link's full-power time.
    """
    g, n = data.e_agg, len(data.members)
    child = np.flatnonzero(data.parent >= 0)
    path = data.path_matrix()[:, child]
    t_min_up = transmit_time(data.up_bits[child], data.d2d_band_hz, data.pmax[child], data.up_gain[child], data.noise)
    tau_min = np.where(data.cycles > 0, data.cycles / data.fmax, 0.0)
    tau = cp.Variable(n, nonneg=True)
    up = cp.Variable(len(child), nonneg=True)
    agg = cp.Variable(1, nonneg=True)
    phase_up = cp.Variable(nonneg=True)
    cons = [tau >= tau_min, up >= t_min_up, tau + path @ up <= phase_up]
    busy = data.cycles > 0
    energy = 0.0
    if busy.any():
        kc3 = data.kappa[busy] * data.cycles[busy] ** 3
        energy = g * cp.sum(cp.multiply(kc3, cp.power(tau[busy], -2)))
    if len(child):
        e_up, cone = _energy_term(up, data.up_bits[child], data.d2d_band_hz, data.up_gain[child], data.noise,
                                  2 * t_min_up)
        energy = energy + g * e_up
        cons.append(cone)
    period = g * phase_up + data.fixed_s
    regular_round = phase_up
    down = None
    last = np.zeros(len(child)) if data.last_bits is None else data.last_bits[child]
    if (g > 1 or (last > 0).any()) and len(child):
        t_min_down = transmit_time(data.down_bits[child], data.d2d_band_hz, data.down_pmax[child],
                                   data.down_gain[child], data.noise)
        rho = np.divide(last, data.down_bits[child], out=np.zeros(len(child)), where=data.down_bits[child] > 0)
        down = cp.Variable(len(child), nonneg=True)
        e_down, cone = _energy_term(down, data.down_bits[child], data.d2d_band_hz, data.down_gain[child], data.noise,
                                    2 * t_min_down, (g - 1) + rho)
        energy = energy + e_down
        cons += [cone, down >= t_min_down]
        if g > 1:
            phase_down = cp.Variable(nonneg=True)
            cons.append(path @ down <= phase_down)
            period = period + (g - 1) * phase_down
            regular_round = regular_round + phase_down
        if (rho > 0).any():
            late = cp.Variable(nonneg=True)
            cons.append(path @ cp.multiply(rho, down) - data.downlink_s <= late)
            period = period + late
    if data.agg_bits > 0:
        t_min_agg = float(transmit_time(data.agg_bits, data.band_hz, data.pmax[data.root], data.agg_gain, data.noise))
        e_upload, cone = _energy_term(agg, np.array([data.agg_bits]), data.band_hz,
                                   np.array([data.agg_gain]), data.noise, np.array([2 * t_min_agg]))
        energy = energy + e_upload
        cons += [cone, agg >= t_min_agg]
        period = period + agg[0]
    cons.append(period <= budget_s)
    if g > 1 and np.isfinite(round_cap_s):
        cons.append(regular_round <= round_cap_s)
    return TreeProblem(cp.Problem(cp.Minimize(energy), cons), tau, up, down, agg)
