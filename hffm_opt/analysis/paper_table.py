"""The paper's Table I: latency and energy per edge round of its five schemes, in the prototype's accounting and in
the package's consistent one."""

from __future__ import annotations

from ..evaluate import evaluate
from ..network.scenario import Scenario
from ..schedulers import schedule

# (method key of the JSON output, display name, scheduler, e_agg) of the paper's Table I
PAPER_ROWS = (("star", "Star", "star", 1), ("hier", "HF-FM", "hierarchical", 2), ("hier", "HF-FM", "hierarchical", 8),
              ("edge", "Edge only", "edge-only", 200), ("hier-d2d", "HF-FM+D2D", "hierarchical-d2d", 2),
              ("hier-d2d", "HF-FM+D2D", "hierarchical-d2d", 8), ("edge-d2d", "Edge only+D2D", "edge-only-d2d", 200))


def paper_table(scenario: Scenario, seed: int = 0) -> list[dict]:
    """The paper's Table I rows: latency (s) and energy (J) per edge round, paper and consistent accounting."""
    rows = []
    for key, _, name, e_agg in PAPER_ROWS:
        plan = schedule(scenario, name, e_agg=e_agg, seed=seed)
        p, c = evaluate(scenario, plan, "paper"), evaluate(scenario, plan)
        rows.append({"method": key, "e_agg": e_agg, "latency_s": p.latency_s, "energy_j": p.energy_j,
                     "latency_s_consistent": c.latency_s, "energy_j_consistent": c.energy_j})
    return rows
