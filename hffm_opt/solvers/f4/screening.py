"""Cheap, proven facts about one cluster structure before its convex inner problem is solved.

- :func:`least_period`: the shortest period (s) the structure can reach: every link at full power, every CPU at
  full speed; a direct cluster also splits its edge's band to finish every device's round together (a bisection
  on the round on :func:`~hffm_opt.network.channel.min_bandwidth`). Below it the inner problem is infeasible.
- :func:`structure_bound`: a lower bound (J per period) on the structure's least energy within a budget, by
  relaxation: the three phases of a D2D cluster (up, down, the aggregator's upload) each get the largest time the
  others leave at their shortest, and each node only its own hop within its phase (the path sums dropped). Every
  relaxation enlarges a time budget, and link and compute energies fall with time, so it never exceeds the
  optimum: the search prices structures in the order of this bound and stops once it reaches the best energy.
"""

from __future__ import annotations

import numpy as np

from ...formulations.cluster import ClusterData
from ...network.channel import link_energy, min_bandwidth, transmit_time
from .bounds import split_energy
from .cluster import SAFETY

ROUND_RTOL = 1e-13  # relative width at which the bisection on a direct cluster's round stops


def _compute_floor(data: ClusterData) -> np.ndarray:
    return np.where(data.cycles > 0, data.cycles / data.fmax, 0.0)


def _tree_phases(data: ClusterData) -> tuple[float, float, float]:
    """(shortest up phase, shortest down phase, shortest aggregator upload) of a D2D cluster (s)."""
    path = data.path_matrix()
    up = transmit_time(data.up_bits, data.d2d_band_hz, data.pmax, data.up_gain, data.noise)
    phase_up = float((_compute_floor(data) + path @ up).max())
    phase_down = 0.0
    if data.e_agg > 1:
        down = transmit_time(data.down_bits, data.d2d_band_hz, data.down_pmax, data.down_gain, data.noise)
        phase_down = float((path @ down).max())
    agg = float(transmit_time(data.agg_bits, data.band_hz, data.pmax[data.root], data.agg_gain, data.noise))
    return phase_up, phase_down, agg


def least_round(data: ClusterData) -> float:
    """Shortest edge round (s) of a direct cluster: compute at full speed, uploads at full power, the band split so
    that every device needs the same round (inf when some device cannot send at all)."""
    floor = _compute_floor(data)
    sends = data.up_bits > 0
    if not sends.any():
        return float(floor.max(initial=0.0))
    bits, gain, pmax = data.up_bits[sends], data.up_gain[sends], data.pmax[sends]
    alone = transmit_time(bits, data.band_hz, pmax, gain, data.noise)
    if not np.isfinite(alone).all():
        return float("inf")
    lo = float((floor[sends] + alone).max())
    hi = float((floor[sends] + transmit_time(bits, data.band_hz / sends.sum(), pmax, gain, data.noise)).max())

    def fits(round_s: float) -> bool:
        return float(min_bandwidth(bits, round_s - floor[sends], pmax, gain, data.noise).sum()) <= data.band_hz

    if fits(lo):
        hi = lo
    while hi - lo > ROUND_RTOL * hi:
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if fits(mid) else (mid, hi)
    return max(hi, float(floor.max(initial=0.0)))


def least_period(data: ClusterData) -> float:
    """Shortest period (s) of the cluster's structure (module docstring); 0 for an empty cluster."""
    if len(data.members) == 0:
        return 0.0
    if not data.uses_d2d:
        return data.e_agg * least_round(data) + data.fixed_s
    phase_up, phase_down, agg = _tree_phases(data)
    return data.e_agg * phase_up + (data.e_agg - 1) * phase_down + agg + data.fixed_s


def structure_bound(data: ClusterData, budget_s: float) -> float:
    """Lower bound (J per period) on the structure's least energy within ``budget_s`` as the inner problem solves
    it (with its margin :data:`SAFETY`); inf when the structure cannot meet it; 0 for a direct cluster (one
    structure: always priced)."""
    if len(data.members) == 0:
        return 0.0
    budget = budget_s * (1 - SAFETY)
    if least_period(data) > budget:
        return float("inf")
    if not data.uses_d2d:
        return 0.0
    g, free = data.e_agg, budget - data.fixed_s
    phase_up, phase_down, agg = _tree_phases(data)
    up_max = (free - (g - 1) * phase_down - agg) / g
    child = data.parent >= 0
    with np.errstate(all="ignore"):
        sends = split_energy(data.up_bits[child], np.full(int(child.sum()), data.d2d_band_hz), data.up_gain[child],
                             data.pmax[child], data.noise, data.cycles[child], data.kappa[child], data.fmax[child],
                             up_max)
        root_cycles = data.cycles[data.root]
        root = data.kappa[data.root] * root_cycles ** 3 / up_max ** 2 if root_cycles > 0 else 0.0
        energy = g * (float(sends.sum()) + root)
        if g > 1 and child.any():
            down_max = (free - g * phase_up - agg) / (g - 1)
            energy += (g - 1) * float(link_energy(data.down_bits[child], down_max, data.d2d_band_hz,
                                                  data.down_gain[child], data.noise).sum())
        if data.agg_bits > 0:
            agg_max = free - g * phase_up - (g - 1) * phase_down
            energy += float(link_energy(data.agg_bits, agg_max, data.band_hz, data.agg_gain, data.noise))
    return energy + data.fixed_j if np.isfinite(energy) else float("inf")
