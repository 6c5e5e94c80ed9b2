"""Plausible ranges of the physical inputs of a scenario, and the sizes a problem may have.

:data:`RANGES` is the one table of plausible ranges (SI units); :class:`~hffm_opt.network.scenario.Scenario`
refuses a value outside its range with the field, the value and the range. Inside these ranges every link rate of
a scenario is > 0 and every latency and energy the evaluator computes for a plan within the scenario's limits is
finite. The size limits bound the memory a scenario takes (dense (devices x edge servers) gain matrix, D2D link
list) and the work of one plan (edge rounds per period); they are checked before anything is allocated.
"""

from __future__ import annotations

from typing import NamedTuple

from ..errors import ScenarioError


class Range(NamedTuple):
    """``low <= value <= high`` in ``unit`` (``low`` excluded when ``open_low``)."""

    low: float
    high: float
    unit: str
    open_low: bool = False

    def rule(self) -> str:
        """The range as a rule: ``must be in (0, 1e4] W``."""
        unit = f" {self.unit}" if self.unit else ""
        return f"must be in {'(' if self.open_low else '['}{self.low:g}, {self.high:g}]{unit}"


RANGES: dict[str, Range] = {
    "position_m": Range(-1e8, 1e8, "m"),  # devices, edge servers and the cloud
    "area_m": Range(0.0, 1e8, "m", open_low=True),
    "noise_psd_w_per_hz": Range(1e-30, 1e-10, "W/Hz"),
    "edge_servers.bandwidth_hz": Range(1.0, 1e12, "Hz"),
    "edge_servers.downlink_power_w": Range(0.0, 1e4, "W"),
    "edge_servers.backhaul_delay_s": Range(0.0, 3600.0, "s"),
    "edge_servers.backhaul_rate_bps": Range(1.0, 1e13, "bit/s"),
    "edge_servers.backhaul_power_w": Range(0.0, 1e4, "W"),
    "devices.cpu_hz": Range(1e3, 1e12, "Hz"),
    "devices.flops_per_cycle": Range(1e-3, 1e6, "FLOP/cycle"),
    "devices.kappa": Range(0.0, 1e-20, "J/(cycle Hz^2)"),
    "devices.memory_bytes": Range(1.0, 1e15, "bytes"),
    "devices.pmax_w": Range(1e-12, 1e4, "W"),
    "devices.uplink_gain": Range(1e-40, 1.0, "(linear; NaN = no link)"),
    "devices.samples": Range(0, 1e9, "samples"),
    "d2d.gain": Range(1e-40, 1.0, "(linear)"),
    "d2d.bandwidth_hz": Range(1.0, 1e12, "Hz"),
    "d2d.range_m": Range(0.0, 1e8, "m (or unlimited)", open_low=True),
    "modules.update_bits": Range(0.0, 1e15, "bit"),
    "modules.full_bits": Range(0.0, 1e15, "bit"),
    "modules.flops_per_sample": Range(0.0, 1e18, "FLOP"),
    "modules.memory_bytes": Range(0.0, 1e15, "bytes"),
    "modules.train_memory_bytes": Range(0.0, 1e15, "bytes"),
    "prototype.model_bits": Range(1.0, 1e15, "bit"),
    "prototype.uplink_bandwidth_hz": Range(1.0, 1e12, "Hz"),
    "prototype.uplink_rate_power_w": Range(1e-12, 1e4, "W"),
    "prototype.uplink_energy_power_w": Range(1e-12, 1e4, "W"),
    "prototype.d2d_bandwidth_hz": Range(1.0, 1e12, "Hz"),
    "prototype.d2d_rate_power_w": Range(1e-12, 1e4, "W"),
    "prototype.d2d_energy_power_w": Range(1e-12, 1e4, "W"),
    "prototype.d2d_connect_radius_m": Range(0.0, 1e8, "m", open_low=True),
    "prototype.backhaul_delay_s": Range(0.0, 3600.0, "s"),
    "prototype.backhaul_rate_bps": Range(1.0, 1e13, "bit/s"),
    "prototype.backhaul_energy_power_w": Range(1e-12, 1e4, "W"),
}

MAX_DEVICES = 1_000_000
MAX_EDGES = 100_000
MAX_GAINS = 100_000_000  # devices x edge servers: the dense uplink gain matrix (8 bytes each, 800 MB at most)
MAX_D2D_LINKS = 10_000_000
MAX_MODULES = 10_000
MAX_E_AGG = 10_000  # edge rounds per global period of a plan
MAX_LOCAL_STEPS = 1_000_000  # tau of a plan
MAX_BATCH = 1_000_000_000  # samples per local step of a plan
MAX_ROUNDS = 1_000_000  # edge rounds of one training run


def check_size(n_devices: int, n_edges: int, n_links: int = 0, where: str = "scenario") -> None:
    """Refuse a scenario of ``n_devices`` x ``n_edges`` with ``n_links`` D2D links beyond the size limits, before
    anything of that size is allocated (raises :class:`ScenarioError` with the limit)."""
    for what, value, limit in (("devices", n_devices, MAX_DEVICES), ("edge servers", n_edges, MAX_EDGES),
                               ("devices x edge servers", n_devices * n_edges, MAX_GAINS),
                               ("D2D links", n_links, MAX_D2D_LINKS)):
        if value > limit:
            raise ScenarioError(f"{where} size = {value:,} {what}: at most {limit:,} are supported")
