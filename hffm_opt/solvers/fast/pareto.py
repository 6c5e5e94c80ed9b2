"""F3's latency-energy Pareto front for one edge server: the least energy (J) for every common deadline T (s).

The front starts at the min-max latency T* (:func:`fast_kkt.min_max_latency_allocation`: no band split lets every
device finish sooner at full power) and, for each T >= T*, the min-energy program with t_u = T for every device
(:func:`fast_kkt.min_energy_allocation`) gives the least energy; it falls as T grows.
"""

from __future__ import annotations

import numpy as np

from ...formulations.allocation import AllocationData
from . import kkt as fast_kkt


def latency_energy_front(data: AllocationData, n_points: int = 12, span: float = 4.0) -> list[dict]:
    """``n_points`` points ``{"latency_s", "energy_j"}`` with T from just above T* (1 + 1e-4) to ``span`` x T*
    (geometric), for ``data``'s bits, gains, powers and band (its ``time_s`` is ignored)."""
    if n_points < 2 or not span > 1:
        raise ValueError(f"n_points = {n_points!r}, span = {span!r}: need n_points >= 2 and span > 1")
    t_star = fast_kkt.min_max_latency_allocation(data.bits, data.gain, data.noise_psd, data.bandwidth_hz,
                                                 data.pmax_w).latency_s
    front = []
    for t in np.geomspace(t_star * (1 + 1e-4), span * t_star, n_points):
        alloc = fast_kkt.min_energy_allocation(data.bits, np.full(data.n, t), data.gain, data.noise_psd,
                                               data.bandwidth_hz, data.pmax_w)
        front.append({"latency_s": float(t), "energy_j": alloc.objective})
    return front
