"""F4, the joint plan, as a model object: what :func:`hffm_opt.solvers.solve` needs to run F4 or exact enumeration.

Problem (section 4; consistent accounting): per cluster choose direct uploads or a D2D aggregator and relay tree
(discrete), and CPU frequencies, uplink bandwidth and powers, D2D powers (continuous), minimising the energy per
edge round (J) subject to the latency per edge round <= ``target_latency_s`` (s; None = the latency of the
``target_from`` heuristic on the same instance). Module assignment (every needed trainable module), tiers,
association and ``e_agg`` are those of the baselines. The builder runs a pre-check of capacities and deadlines
that names the responsible device or edge server.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..channel import shannon_rate
from ..scenario import Scenario
from .cluster import cluster_data


@dataclass(frozen=True)
class JointModel:
    """F4 on one scenario: ``e_agg`` edge rounds per period, the latency target (s) or how to derive it, the seed
    of the heuristic start, the pre-check's verdict and the builder's time (s)."""

    scenario: Scenario
    e_agg: int
    target_latency_s: float | None
    target_from: str
    seed: int
    precheck_message: str | None
    build_s: float
    name: str = "F4 joint plan"


def build_joint(scenario: Scenario, e_agg: int = 2, target_latency_s: float | None = None, seed: int = 0,
                target_from: str = "hierarchical-d2d") -> JointModel:
    """The F4 model of ``scenario`` (module docstring), with its infeasibility pre-check."""
    t0 = time.perf_counter()
    if int(e_agg) != e_agg or e_agg < 1:
        raise ValueError(f"e_agg = {e_agg!r}: must be an integer >= 1")
    if target_latency_s is not None and not (np.isfinite(target_latency_s) and target_latency_s > 0):
        raise ValueError(f"target_latency_s = {target_latency_s!r}: must be a finite latency > 0 s, or None")
    message = joint_precheck(scenario, int(e_agg), target_latency_s)
    return JointModel(scenario, int(e_agg), target_latency_s, target_from, seed, message, time.perf_counter() - t0)


def joint_precheck(scenario: Scenario, e_agg: int, target_latency_s: float | None) -> str | None:
    """Why F4 is infeasible, naming the device or edge server, or None (a necessary-condition check).

    - memory: a device cannot hold the modules it needs while training the trainable ones;
    - deadline (with a target T): a device's compute at full CPU speed plus its fastest first hop at full power
      (its upload with the whole band of its edge, or its best D2D link) exceeds T; an edge server whose backhaul
      transfer alone exceeds the period e_agg T.
    """
    from ..schedulers import baseline_plan

    dev, mods = scenario.devices, scenario.module_arrays
    plan = baseline_plan(scenario, mode="hierarchical", e_agg=e_agg, top_tier="cloud", name="precheck")
    held = (scenario.need & ~plan.train) @ mods["memory_bytes"] + plan.train @ (mods["memory_bytes"]
                                                                             + mods["train_memory_bytes"])
    over = np.flatnonzero(held > dev.memory_bytes)
    if over.size:
        u = int(over[0])
        return (f"memory: device {dev.ids[u]} needs {held[u]:.6g} bytes to hold and train its modules but has "
                f"{dev.memory_bytes[u]:.6g} bytes" + (f" ({over.size - 1} more devices likewise)" if over.size > 1 else ""))
    if target_latency_s is None:
        return None
    noise, d2d = scenario.noise_psd_w_per_hz, scenario.d2d
    for e in range(scenario.n_edges):
        data = cluster_data(scenario, plan, e)
        if len(data.members) == 0:
            continue
        if data.fixed_s > e_agg * target_latency_s:
            return (f"deadline: edge {scenario.edges.ids[e]}'s backhaul and downlink transfers alone take "
                    f"{data.fixed_s:.6g} s, above the period {e_agg} x {target_latency_s:.6g} s")
        compute = np.where(data.cycles > 0, data.cycles / data.fmax, 0.0)
        direct = data.up_bits / shannon_rate(data.band_hz, data.pmax, data.up_gain, noise)
        hop = np.full(len(data.members), np.inf)
        local = np.full(scenario.n_devices, -1)
        local[data.members] = np.arange(len(data.members))
        keep = (local[d2d.src] >= 0) & (local[d2d.dst] >= 0)
        if keep.any():
            src = local[d2d.src[keep]]
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
