"""Block fading: every known gain of a scenario redrawn as path loss (from the positions) times a new Rayleigh draw.

Used once per edge round by the trainer's block-fading mode (:mod:`hffm_opt.learners.dynamics`) and by the
re-solve study :func:`hffm_opt.analysis.dynamic.run_dynamic`. Seeded by the caller's generator: the same generator
state gives the same draw.
"""

from __future__ import annotations

import numpy as np

from .channel import pairwise_distance, path_loss, rayleigh_power
from .scenario import Scenario


def redraw_fading(scenario: Scenario, rng: np.random.Generator) -> Scenario:
    """The scenario with every known gain replaced by path loss (from the positions) times a new Rayleigh draw.

    Uplink gains that are unknown (NaN: that association is not allowed) stay unknown; the D2D link list, its
    bandwidth and range are kept. The uplink gains are drawn first (row-major, (U, E)), then the D2D links."""
    dev, d2d = scenario.devices, scenario.d2d
    known = np.isfinite(dev.uplink_gain)
    up = path_loss(pairwise_distance(dev.position_m, scenario.edges.position_m)) * rayleigh_power(rng, known.shape)
    dist = np.linalg.norm(dev.position_m[d2d.src] - dev.position_m[d2d.dst], axis=1)
    devices = type(dev)(**{**dev.__dict__, "uplink_gain": np.where(known, up, np.nan)})
    links = type(d2d)(src=d2d.src, dst=d2d.dst, gain=path_loss(dist) * rayleigh_power(rng, len(dist)),
                      bandwidth_hz=d2d.bandwidth_hz, range_m=d2d.range_m)
    return scenario.replace(devices=devices, d2d=links)
