"""``evaluate(scenario, plan)``: check every constraint of a plan and price one global period, in the consistent
accounting (:mod:`.consistent`, default) or the paper prototype's (:mod:`.paper`)."""

from __future__ import annotations

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
        return consistent_metrics(scenario, plan, tree)
    return paper_metrics(scenario, plan)


__all__ = ["ACCOUNTINGS", "PARTS", "Metrics", "check", "evaluate"]
