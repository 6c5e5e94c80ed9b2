"""``Metrics``: the latency (s) and energy (J) of one global period of a plan, with breakdowns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PARTS = ("compute", "uplink", "d2d", "downlink", "backhaul")


@dataclass(frozen=True, eq=False)
class Metrics:
    """Latency (s) and energy (J) of one global period of a plan, with breakdowns.

    ``latency_s``/``energy_j`` are per edge round (period / e_agg). ``round_end_s`` (e_agg,) is the time at
    which every cluster has finished edge round r (last entry = period latency); ``round_energy_j`` (e_agg,)
    sums to the period energy. ``energy_by_part``/``bits_by_part`` are per period over :data:`PARTS`;
    ``latency_by_part`` decomposes the period latency along the critical cluster's path (``wait`` = time spent
    waiting for the deadline). ``stragglers`` (U,) marks devices dropped from every round.
    ``cluster_period_s``/``cluster_energy_j`` (E,): each cluster's own period latency and energy (consistent
    accounting; None in the paper's), what the cluster would cost alone.
    """

    accounting: str
    e_agg: int
    period_latency_s: float
    period_energy_j: float
    round_end_s: np.ndarray
    round_energy_j: np.ndarray
    energy_by_part: dict
    latency_by_part: dict
    bits_by_part: dict
    stragglers: np.ndarray
    cluster_period_s: np.ndarray | None = None
    cluster_energy_j: np.ndarray | None = None

    @property
    def latency_s(self) -> float:
        """Latency per edge round (s)."""
        return self.period_latency_s / self.e_agg

    @property
    def energy_j(self) -> float:
        """Energy per edge round (J)."""
        return self.period_energy_j / self.e_agg

    @property
    def access_energy_j(self) -> float:
        """Devices' transmission energy (uplink + D2D) per edge round (J)."""
        return (self.energy_by_part["uplink"] + self.energy_by_part["d2d"]) / self.e_agg

    @property
    def backhaul_energy_j(self) -> float:
        """Backhaul energy per edge round (J)."""
        return self.energy_by_part["backhaul"] / self.e_agg

    @property
    def energy_by_tier(self) -> dict:
        """Per-period energy of the device tier (compute, uplink, D2D) and the edge tier (downlink, backhaul)."""
        p = self.energy_by_part
        return {"device": p["compute"] + p["uplink"] + p["d2d"], "edge": p["downlink"] + p["backhaul"]}

    @property
    def participants(self) -> np.ndarray:
        """(U,) bool: devices whose updates are aggregated."""
        return ~self.stragglers

    def summary(self) -> dict:
        """Flat JSON-ready dict of the headline figures."""
        return {"accounting": self.accounting, "e_agg": self.e_agg, "latency_s": self.latency_s,
                "energy_j": self.energy_j, "access_energy_j": self.access_energy_j,
                "backhaul_energy_j": self.backhaul_energy_j, "period_latency_s": self.period_latency_s,
                "period_energy_j": self.period_energy_j, "n_stragglers": int(self.stragglers.sum()),
                "energy_by_part_j": dict(self.energy_by_part), "latency_by_part_s": dict(self.latency_by_part)}


def zero_parts() -> dict:
    """A breakdown dict with every part of :data:`PARTS` and ``wait`` at 0."""
    return {p: 0.0 for p in PARTS} | {"wait": 0.0}
