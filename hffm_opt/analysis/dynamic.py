"""Dynamic channels: block fading redrawn every edge round, and the plan's continuous part re-solved each time.

The structure of the plan (association, modules, D2D trees) stays; CPU speeds, bandwidth and powers are
re-optimised for each new draw within the same period budget (s). Seeded: the same seed gives the same draws.
"""

from __future__ import annotations

import time

import numpy as np

from ..evaluate import evaluate
from ..network.channel import pairwise_distance, path_loss, rayleigh_power
from ..network.scenario import Scenario
from ..plan import Plan
from ..solvers.f4.cluster import optimise_continuous


def redraw_fading(scenario: Scenario, rng: np.random.Generator) -> Scenario:
    """The scenario with every known gain replaced by path loss (from the positions) times a new Rayleigh draw."""
    dev, d2d = scenario.devices, scenario.d2d
    known = np.isfinite(dev.uplink_gain)
    up = path_loss(pairwise_distance(dev.position_m, scenario.edges.position_m)) * rayleigh_power(rng, known.shape)
    dist = np.linalg.norm(dev.position_m[d2d.src] - dev.position_m[d2d.dst], axis=1)
    devices = type(dev)(**{**dev.__dict__, "uplink_gain": np.where(known, up, np.nan)})
    links = type(d2d)(src=d2d.src, dst=d2d.dst, gain=path_loss(dist) * rayleigh_power(rng, len(dist)),
                      bandwidth_hz=d2d.bandwidth_hz, range_m=d2d.range_m)
    return scenario.replace(devices=devices, d2d=links)


def run_dynamic(scenario: Scenario, plan: Plan, rounds: int, seed: int = 0, budget_s: float | None = None) -> list[dict]:
    """Per round: redraw the fading, re-solve the continuous part within the period budget, evaluate.

    Returns one record per round: ``resolve_s`` (wall time of the re-solve), ``latency_s`` and ``energy_j``
    per edge round, ``feasible`` (False when the new channel cannot meet the budget with this structure; the
    round then keeps the previous decisions and its figures are the evaluator's for them).
    """
    rng = np.random.default_rng(seed)
    budget = budget_s if budget_s is not None else evaluate(scenario, plan).period_latency_s
    records, current = [], plan
    for r in range(rounds):
        drawn = redraw_fading(scenario, rng)
        current = current.for_scenario(drawn)  # the decisions carry over to the redrawn channel
        t0 = time.perf_counter()
        new, _, problems = optimise_continuous(drawn, current, budget)
        resolve_s = time.perf_counter() - t0
        if not problems:
            current = new
        m = evaluate(drawn, current)
        records.append({"round": r, "resolve_s": resolve_s, "latency_s": m.latency_s, "energy_j": m.energy_j,
                        "feasible": not problems})
    return records
