"""F4, the joint plan, as a model object: what :func:`hffm_opt.solvers.solve` needs to run F4 or exact enumeration.

Problem (section 4; consistent accounting): per cluster choose direct uploads or a D2D aggregator and relay tree
(discrete), and CPU frequencies, uplink bandwidth and powers, D2D powers (continuous), minimising the energy per
edge round (J) subject to the latency per edge round <= ``target_latency_s`` (s). Module assignment, tiers,
association and ``e_agg`` are those of the ``start`` plan, which the search also starts from (the optimising
schedulers pick it and the target: :func:`hffm_opt.schedulers.optimising.joint_model`). The builder runs a
pre-check of capacities and deadlines that names the responsible device or edge server.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..network.channel import shannon_rate
from ..network.scenario import Scenario
from ..network.topology import cluster_links
from ..plan import Plan
from .cluster import cluster_data


@dataclass(frozen=True)
class JointModel:
    """F4 on one scenario: the starting plan (its name in ``start_name``), the latency target per edge round (s),
    the pre-check's verdict and the builder's time (s)."""

    program: ClassVar[str] = "joint"  # the key of the solver registry's table
    scenario: Scenario
    start: Plan
    target_latency_s: float
    start_name: str
    precheck_message: str | None
    build_s: float
    name: str = "F4 joint plan"

    @property
    def e_agg(self) -> int:
        """Edge rounds per global period (the starting plan's)."""
        return int(self.start.e_agg)


def build_joint(scenario: Scenario, start: Plan, target_latency_s: float, start_name: str = "") -> JointModel:
    """The F4 model of ``scenario`` from ``start`` within ``target_latency_s`` (module docstring), pre-checked."""
    t0 = time.perf_counter()
    if not (np.isfinite(target_latency_s) and target_latency_s > 0):
        raise ValueError(f"target_latency_s = {target_latency_s!r}: must be a finite latency > 0 s")
    if start.mode != "hierarchical":
        raise ValueError(f"start.mode = {start.mode!r}: F4 plans hierarchical training")
    message = joint_precheck(scenario, start, float(target_latency_s))
    return JointModel(scenario, start, float(target_latency_s), start_name or start.scheduler, message,
                      time.perf_counter() - t0)


def joint_precheck(scenario: Scenario, start: Plan, target_latency_s: float) -> str | None:
    """Why F4 is infeasible, naming the device or edge server, or None (a necessary-condition check).

    - memory: a device cannot hold the modules it needs while training the ones ``start`` assigns it;
    - deadline: a device's compute at full CPU speed plus its fastest first hop at full power (its upload with
      the whole band of its edge, or its best D2D link) exceeds the target; an edge server whose backhaul transfer
      alone exceeds the period e_agg x target.
    """
    dev, mods, e_agg = scenario.devices, scenario.module_arrays, int(start.e_agg)
    held = (scenario.need & ~start.train) @ mods["memory_bytes"] + start.train @ (mods["memory_bytes"]
                                                                               + mods["train_memory_bytes"])
    over = np.flatnonzero(held > dev.memory_bytes)
    if over.size:
        u = int(over[0])
        return (f"memory: device {dev.ids[u]} needs {held[u]:.6g} bytes to hold and train its modules but has "
                f"{dev.memory_bytes[u]:.6g} bytes" + (f" ({over.size - 1} more devices likewise)" if over.size > 1 else ""))
    noise, d2d = scenario.noise_psd_w_per_hz, scenario.d2d
    no_d2d = start.replace(aggregator=np.full(scenario.n_edges, -1), parent=np.full(scenario.n_devices, -1))
    for e in range(scenario.n_edges):
        data = cluster_data(scenario, no_d2d, e)  # each device's own update on its first hop
        if len(data.members) == 0:
            continue
        fixed = data.backhaul_s + data.downlink_s  # the least any structure spends on them (one edge downlink)
        if fixed > e_agg * target_latency_s:
            return (f"deadline: edge {scenario.edges.ids[e]}'s backhaul and downlink transfers alone take "
                    f"{fixed:.6g} s, above the period {e_agg} x {target_latency_s:.6g} s")
        compute = np.where(data.cycles > 0, data.cycles / data.fmax, 0.0)
        direct = data.up_bits / shannon_rate(data.band_hz, data.pmax, data.up_gain, noise)
        hop = np.full(len(data.members), np.inf)
        keep, src, _ = cluster_links(scenario, data.members)
        if keep.any():
            rate = shannon_rate(d2d.bandwidth_hz, dev.pmax_w[d2d.src[keep]], d2d.gain[keep], noise)
            np.minimum.at(hop, src, data.up_bits[src] / rate)
        need = compute + np.where(data.up_bits > 0, np.minimum(direct, hop), 0.0)
        late = np.flatnonzero(need > target_latency_s)
        if late.size:
            u = int(late[0])
            return (f"deadline: device {dev.ids[data.members[u]]} needs {compute[u]:.6g} s of compute at full CPU speed "
                    f"and {need[u] - compute[u]:.6g} s for its fastest first hop at full power (the whole band of edge "
                    f"{scenario.edges.ids[e]} or its best D2D link): above the target {target_latency_s:.6g} s per round")
    return None
