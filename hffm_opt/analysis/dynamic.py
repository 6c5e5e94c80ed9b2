"""Dynamic channels: block fading redrawn every edge round, and the plan's continuous part re-solved each time.

The structure of the plan (association, modules, D2D trees) stays; CPU speeds, bandwidth and powers are
re-optimised for each new draw within the same period budget (s). Seeded: the same seed gives the same draws.
The draw itself is :func:`hffm_opt.network.fading.redraw_fading` (re-exported here); the trainer runs the same
loop inside training (``TrainConfig(fading="block")``, :mod:`hffm_opt.learners.dynamics`).
"""

from __future__ import annotations

import numpy as np

from ..evaluate import evaluate
from ..learners.dynamics import resolve_continuous
from ..network.fading import redraw_fading
from ..network.scenario import Scenario
from ..plan import Plan

__all__ = ["redraw_fading", "run_dynamic"]


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
        current, feasible, resolve_s = resolve_continuous(drawn, current, budget)
        m = evaluate(drawn, current)
        records.append({"round": r, "resolve_s": resolve_s, "latency_s": m.latency_s, "energy_j": m.energy_j,
                        "feasible": feasible})
    return records
