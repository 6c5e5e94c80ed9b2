"""``evaluate(scenario, plan)``: check every constraint of a plan and price one global period, in the consistent
accounting (:mod:`.consistent`, default) or the paper prototype's (:mod:`.paper`). A plan that cannot be priced is a
:class:`~hffm_opt.errors.PlanError`, never a number: one made for another scenario, one whose figures would not be
finite, and (consistent accounting) one whose round deadline every training device misses."""

from __future__ import annotations

import math

from ..errors import PlanError
from ..network.scenario import Scenario
from ..plan import Plan
from .checks import check
from .consistent import consistent_metrics
from .metrics import PARTS, Metrics
from .paper import paper_metrics

ACCOUNTINGS = ("consistent", "paper")


def evaluate(scenario: Scenario, plan: Plan, accounting: str = "consistent") -> Metrics:
    """Check ``plan`` against ``scenario`` (raises :class:`~hffm_opt.errors.PlanError`) and price one global period
    (latency per edge round in s, energy per edge round in J)."""
    if accounting not in ACCOUNTINGS:
        raise ValueError(f"accounting = {accounting!r}: must be one of {ACCOUNTINGS}")
    tree = check(scenario, plan)
    if accounting == "consistent":
        metrics = consistent_metrics(scenario, plan, tree)
        trainers = plan.train.any(axis=1)
        if trainers.any() and not (trainers & metrics.participants).any():
            raise PlanError(f"deadline_s = {plan.deadline_s:.6g}: no training device meets it (all "
                            f"{int(trainers.sum())} miss it), nothing would be aggregated; raise or drop the deadline")
    else:
        metrics = paper_metrics(scenario, plan)
    for name, value in (("period_latency_s", metrics.period_latency_s), ("period_energy_j", metrics.period_energy_j)):
        if not math.isfinite(value):
            raise PlanError(f"{accounting} {name} = {value}: not finite (the plan's cpu_hz or a link's power and "
                            "bandwidth give a rate of 0 for its load)")
    return metrics


__all__ = ["ACCOUNTINGS", "PARTS", "Metrics", "check", "evaluate"]
