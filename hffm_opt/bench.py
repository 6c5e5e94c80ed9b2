"""Benchmarks behind ``hffm-opt bench``: schedulers across sizes, the F3 allocators, dynamic re-solves.

Sizes are device counts of the clustered generator with ``max(10, n // 100)`` edge servers (40 -> 10 x 4,
400 -> 10 x 40, 4,000 -> 40 x 100, 10,000 -> 100 x 100). Every figure is measured in the call, nothing cached.
"""

from __future__ import annotations

import time

from . import generators
from .evaluate import evaluate
from .schedulers import schedule
from .scenario import Scenario


def size_scenario(n_devices: int, seed: int = 0) -> Scenario:
    """The clustered scenario used for a benchmark size."""
    n_edges = max(10, n_devices // 100)
    return generators.clustered(n_edges, max(1, n_devices // n_edges), seed=seed)


def bench_schedulers(sizes, schedulers=("greedy", "optimal"), e_agg: int = 8, seed: int = 0, progress=None) -> list[dict]:
    """Build/solve time, objective (energy per edge round, J), gap and the evaluator's figures per size."""
    records = []
    for n in (progress(sizes) if progress else sizes):
        t0 = time.perf_counter()
        scenario = size_scenario(n, seed)
        build_s = time.perf_counter() - t0
        for name in schedulers:
            t1 = time.perf_counter()
            plan = schedule(scenario, name, e_agg=e_agg, seed=seed)
            solve_s = time.perf_counter() - t1
            m = evaluate(scenario, plan)
            records.append({"n_devices": scenario.n_devices, "n_edges": scenario.n_edges, "scheduler": name,
                            "solver": plan.meta.get("solver", "-"), "build_s": build_s, "solve_s": solve_s,
                            "objective": m.energy_j, "gap": plan.meta.get("gap"), "latency_s": m.latency_s,
                            "energy_j": m.energy_j, "status": plan.meta.get("status", "heuristic")})
    return records


def bench_dynamic(n_devices: int = 400, rounds: int = 10, e_agg: int = 8, seed: int = 0) -> dict:
    """Re-solve time per round under block fading for the greedy structure, against the round's own latency."""
    from .dynamic import run_dynamic

    scenario = size_scenario(n_devices, seed)
    plan = schedule(scenario, "greedy", e_agg=e_agg, seed=seed)
    recs = run_dynamic(scenario, plan, rounds, seed=seed)
    resolve = [r["resolve_s"] for r in recs]
    latency = [r["latency_s"] for r in recs]
    return {"n_devices": scenario.n_devices, "rounds": rounds, "resolve_s_mean": sum(resolve) / rounds,
            "resolve_s_max": max(resolve), "round_latency_s_mean": sum(latency) / rounds,
            "feasible_rounds": sum(r["feasible"] for r in recs)}
