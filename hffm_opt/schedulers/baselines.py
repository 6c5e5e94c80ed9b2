"""The paper's baseline schedulers (section 5 of the design) and the D2D building blocks they share.

They train every trainable module each device needs, give each device an equal share of its edge's band, use the
prototype's fixed rate powers (capped at each device's Pmax) and full CPU speed:

- ``star``: every device sends its update straight to the cloud every round (e_agg = 1);
- ``hierarchical``: edge aggregation every round, cloud every ``e_agg`` rounds;
- ``edge-only``: edge aggregation only, never the cloud (priced over the prototype's 200 rounds);
- ``hierarchical-d2d`` / ``edge-only-d2d``: as above with in-cluster D2D aggregation at the scenario's recorded
  aggregator (else a seeded random device) over shortest-path relay routes on the prototype's D2D graph.
"""

from __future__ import annotations

import numpy as np

from ..network.scenario import Scenario
from ..network.topology import distances_to, prototype_latency_graph
from ..plan import Plan, baseline_plan
from .registry import register

EDGE_ONLY_ROUNDS = 200  # the prototype prices "edge only" over 200 edge rounds


def shortest_path_trees(scenario: Scenario, plan: Plan, aggregators: np.ndarray) -> np.ndarray:
    """Parent array of shortest-path relay trees into each cluster's aggregator on the prototype's D2D graph.

    Link weights are the prototype's D2D latencies of the cluster's largest update.
    """
    parent = np.full(scenario.n_devices, -1)
    s_bits = plan.train @ scenario.module_arrays["update_bits"]
    for e in np.flatnonzero(aggregators >= 0):
        members = np.flatnonzero(plan.association == e)
        if len(members) < 2:
            continue
        graph = prototype_latency_graph(scenario, members, max(float(s_bits[members].max()), 1.0))
        root = int(np.flatnonzero(members == aggregators[e])[0])
        _, nxt = distances_to(graph, root)
        parent[members] = np.where(nxt >= 0, members[np.maximum(nxt, 0)], -1)
    return parent


def with_d2d(scenario: Scenario, plan: Plan, aggregators: np.ndarray) -> Plan:
    """``plan`` with D2D aggregation at ``aggregators`` (E,) over shortest-path relay trees; each parent
    broadcasts at the prototype's D2D rate power capped at its own Pmax."""
    parent = shortest_path_trees(scenario, plan, aggregators)
    pmax_parent = scenario.devices.pmax_w[np.maximum(parent, 0)]
    down = np.minimum(scenario.prototype.d2d_rate_power_w, pmax_parent)
    return plan.replace(aggregator=aggregators, parent=parent, d2d_down_power_w=down)


def recorded_or_random_aggregators(scenario: Scenario, seed: int) -> np.ndarray:
    """(E,) the scenario's recorded D2D aggregators, else a seeded uniform draw from each cluster."""
    rng = np.random.default_rng(seed)
    out = np.full(scenario.n_edges, -1)
    for e in range(scenario.n_edges):
        members = scenario.cluster(e)
        draw = int(rng.choice(members)) if members.size else -1
        out[e] = scenario.recorded_aggregators[e] if scenario.recorded_aggregators[e] >= 0 else draw
    return out


# ---------------------------------------------------------------------- the paper's baselines
@register("star")
def star(scenario: Scenario, *, e_agg: int = 1, seed: int = 0, local_steps: int = 1, batch_size: int = 16) -> Plan:
    """Every device uploads straight to the cloud every round."""
    return baseline_plan(scenario, mode="star", e_agg=1, top_tier="cloud", name="star",
                         local_steps=local_steps, batch_size=batch_size)


@register("hierarchical")
def hierarchical(scenario: Scenario, *, e_agg: int = 2, seed: int = 0, local_steps: int = 1,
                 batch_size: int = 16) -> Plan:
    """HF-FM: edge aggregation every round, cloud aggregation every ``e_agg`` rounds."""
    return baseline_plan(scenario, mode="hierarchical", e_agg=e_agg, top_tier="cloud", name="hierarchical",
                         local_steps=local_steps, batch_size=batch_size)


@register("edge-only")
def edge_only(scenario: Scenario, *, e_agg: int = EDGE_ONLY_ROUNDS, seed: int = 0, local_steps: int = 1,
              batch_size: int = 16) -> Plan:
    """Edge aggregation only; the cloud never aggregates."""
    return baseline_plan(scenario, mode="hierarchical", e_agg=e_agg, top_tier="edge", name="edge-only",
                         local_steps=local_steps, batch_size=batch_size)


@register("hierarchical-d2d")
def hierarchical_d2d(scenario: Scenario, *, e_agg: int = 2, seed: int = 0, local_steps: int = 1,
                     batch_size: int = 16) -> Plan:
    """HF-FM + D2D: in-cluster aggregation at the recorded (else random) aggregator over shortest paths."""
    plan = baseline_plan(scenario, mode="hierarchical", e_agg=e_agg, top_tier="cloud", name="hierarchical-d2d",
                         local_steps=local_steps, batch_size=batch_size)
    return with_d2d(scenario, plan, recorded_or_random_aggregators(scenario, seed))


@register("edge-only-d2d")
def edge_only_d2d(scenario: Scenario, *, e_agg: int = EDGE_ONLY_ROUNDS, seed: int = 0, local_steps: int = 1,
                  batch_size: int = 16) -> Plan:
    """Edge only + D2D: D2D aggregation in each cluster, the edge as top tier, no cloud."""
    plan = baseline_plan(scenario, mode="hierarchical", e_agg=e_agg, top_tier="edge", name="edge-only-d2d",
                         local_steps=local_steps, batch_size=batch_size)
    return with_d2d(scenario, plan, recorded_or_random_aggregators(scenario, seed))

