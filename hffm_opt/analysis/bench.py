"""Benchmarks behind ``hffm-opt bench``: schedulers across sizes, the F3 allocators, dynamic re-solves.

Sizes are device counts of the clustered generator laid out by :func:`size_layout`
(40 -> 10 x 4, 400 -> 10 x 40, 4,000 -> 40 x 100, 10,000 -> 100 x 100). Every figure is measured in the call,
nothing cached.
"""

from __future__ import annotations

import time

import numpy as np

from ..errors import ConfigError
from ..evaluate import evaluate
from ..network import generators
from ..network.scenario import Scenario
from ..schedulers import schedule
from .memory import PeakRss
from .sweep import run_cells

DEVICES_PER_EDGE, MIN_EDGES, MAX_EDGES = 100, 10, 1000  # 1e8 gains at 100,000 devices


def size_layout(n_devices: int) -> tuple[int, int]:
    """(edge servers, devices per edge) of the benchmarks' clustered scenario of ``n_devices``: ``n // 100`` edge
    servers within 10..1,000 (``n`` of them below 10; 40 -> 10 x 4, 10,000 -> 100 x 100), equal clusters;
    ConfigError when ``n_devices`` does not split into them (a benchmark never runs another size than asked)."""
    n = int(n_devices)
    if n < 1:
        raise ConfigError(f"--sizes item {n}: must be at least 1 device")
    n_edges = min(n, max(MIN_EDGES, min(n // DEVICES_PER_EDGE, MAX_EDGES)))
    if n % n_edges:
        raise ConfigError(f"--sizes item {n}: the benchmarks lay out {n_edges} edge servers with equal clusters, so "
                          f"the size must be a multiple of {n_edges} (e.g. {n // n_edges * n_edges})")
    return n_edges, n // n_edges


def size_scenario(n_devices: int, seed: int = 0) -> Scenario:
    """The clustered scenario used for a benchmark size."""
    return generators.clustered(*size_layout(n_devices), seed=seed)


def gurobi_allowed(scenario: Scenario) -> bool:
    """True when gurobipy is installed and every F2 MILP that ``optimal`` would build fits Gurobi's size-limited
    licence: F2 is built for clusters of at most ``F2_MAX_N`` devices, with at most 3n + 2n(n-1) + 2 variables and
    5n + 3.5 n(n-1) + 1 linear constraints (n members), checked here before anything is solved."""
    import importlib.util

    from ..solvers.f4.structures import F2_MAX_N
    from ..solvers.milp import GUROBI_SIZE_LIMIT

    if importlib.util.find_spec("gurobipy") is None:
        return False
    n = np.bincount(scenario.devices.edge, minlength=scenario.n_edges)
    n = n[n <= F2_MAX_N]
    if n.size == 0:
        return False  # no cluster small enough for F2: Gurobi would not be used
    arcs = n * (n - 1)
    return bool((3 * n + 2 * arcs + 2).max() <= GUROBI_SIZE_LIMIT and (5 * n + 3.5 * arcs + 1).max() <= GUROBI_SIZE_LIMIT)


def bench_cell(cell: dict) -> dict:
    """One record of :func:`bench_schedulers`: ``cell`` = ``{"n_devices", "scheduler", "options", "e_agg", "seed"}``."""
    t0 = time.perf_counter()
    scenario = size_scenario(cell["n_devices"], cell["seed"])
    build_s = time.perf_counter() - t0
    with PeakRss() as peak:
        t1 = time.perf_counter()
        plan = schedule(scenario, cell["scheduler"], e_agg=cell["e_agg"], seed=cell["seed"], **cell["options"])
        solve_s = time.perf_counter() - t1
    m = evaluate(scenario, plan)
    return {"n_devices": scenario.n_devices, "n_edges": scenario.n_edges, "scheduler": cell["scheduler"],
            "solver": plan.meta.get("backend", "-").removeprefix("f4:"), "build_s": build_s, "solve_s": solve_s,
            "peak_rss_mb": peak.mb, "objective": m.energy_j, "gap": plan.meta.get("gap"),
            "bound": plan.meta.get("bound"), "gap_controllable": plan.meta.get("gap_controllable"),
            "latency_s": m.latency_s, "energy_j": m.energy_j, "status": plan.meta.get("status", "heuristic")}


def bench_schedulers(sizes, schedulers=("greedy", "optimal"), e_agg: int = 8, seed: int = 0, progress=None, *,
                     workers: int = 1, cluster: str | None = None, store=None) -> list[dict]:
    """Build/solve time, objective (energy per edge round, J), gaps, the evaluator's figures and the peak resident
    memory during the solve (``peak_rss_mb``, :class:`~.memory.PeakRss`) per size and scheduler; ``optimal`` runs on
    HiGHS and, where the licence allows (:func:`gurobi_allowed`), also on Gurobi. Each (size, scheduler) is a cell
    of :func:`~.sweep.run_cells` (``workers``, ``cluster``, ``store``: see there; timings are only comparable
    when measured with one worker on a quiet machine)."""
    cells = []
    for n in sizes:
        runs = [(name, {}) for name in schedulers]
        if "optimal" in schedulers and gurobi_allowed(size_scenario(n, seed)):
            runs.append(("optimal", {"solver": "gurobi"}))
        cells += [{"n_devices": n, "scheduler": name, "options": options, "e_agg": e_agg, "seed": seed}
                  for name, options in runs]
    records, _ = run_cells(bench_cell, cells, workers=workers, cluster=cluster, store=store, progress=progress)
    return records


def bench_dynamic(n_devices: int = 400, rounds: int = 10, e_agg: int = 8, seed: int = 0, slack: float = 0.25) -> dict:
    """Re-solve time per round under block fading for the greedy structure, against the round's own latency.

    The period budget is the greedy plan's period times ``1 + slack``: greedy fills its deadline at full power, so
    without slack any worse fading draw makes some cluster miss it (``feasible_rounds`` counts the rounds in which
    every cluster met the budget)."""
    from .dynamic import run_dynamic

    scenario = size_scenario(n_devices, seed)
    plan = schedule(scenario, "greedy", e_agg=e_agg, seed=seed)
    budget = (1 + slack) * evaluate(scenario, plan).period_latency_s
    recs = run_dynamic(scenario, plan, rounds, seed=seed, budget_s=budget)
    resolve = [r["resolve_s"] for r in recs]
    latency = [r["latency_s"] for r in recs]
    return {"n_devices": scenario.n_devices, "rounds": rounds, "resolve_s_mean": sum(resolve) / rounds,
            "resolve_s_max": max(resolve), "round_latency_s_mean": sum(latency) / rounds,
            "feasible_rounds": sum(r["feasible"] for r in recs), "budget_slack": slack}
