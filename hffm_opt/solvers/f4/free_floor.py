"""The least latency per edge round when full F4 leaves placement or tiers free: the placement that reaches it and
a floor proven over every placement.

:func:`~.objectives.least_latency` takes the start's module assignment and tiers as given. When the model frees
them (:attr:`~hffm_opt.formulations.joint.JointModel.alternates`), a faster start exists: every module that may
stay in its cluster kept at the edge (no backhaul transfer for it) and, with coverage ``"cluster"``, each cluster's
modules spread over its members (:func:`.balance.balanced_train`: no member trains more than it does now, so no
round is longer). :func:`free_latency_floor` returns the faster of the two starts with its floor, and a lower bound
over every placement and tier choice where the association is fixed: per cluster, the least period at which the
relaxation of :func:`~.bounds.cluster_lower_bound` is finite, with every module that may stay in its cluster at the
aggregator tier (no upload, no edge downlink for it) and, with coverage ``"cluster"``, one unit per module
(:func:`.subset_bound.module_units`). With the association free no floor is claimed (lower 0).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ...formulations.joint import JointModel, edge_allowed
from ...plan import AGG, EDGE, Plan
from .balance import balanced_train
from .objectives import LatencyFloor, least_latency, period_floor
from .subset_bound import able_modules, module_units, relaxed_plan


def fastest_placement(model: JointModel) -> Plan:
    """The start with every module that may stay in its cluster at the edge and, with coverage ``"cluster"``, each
    cluster's modules spread over its members."""
    scenario, start = model.scenario, model.start
    tier = np.where(edge_allowed(scenario, model.edge_tiers)[None, :] & (start.tier != AGG), EDGE, start.tier)
    train = start.train.copy()
    if model.coverage == "cluster":
        able = able_modules(scenario)
        for e in range(scenario.n_edges):
            members = np.flatnonzero(start.association == e)
            if len(members):
                train[members] = balanced_train(scenario, start, members, able[members], model.min_trainers)
    return start.replace(train=train, tier=tier.astype(start.tier.dtype))


def free_latency_floor(model: JointModel, exact_cluster_limit: float) -> tuple[JointModel, LatencyFloor]:
    """(the model started from the faster of its start and :func:`fastest_placement`, the least latency per edge
    round from that start (``upper``, s) and the floor proven over every placement and tier (``lower``, s; 0 with
    the association free))."""
    scenario = model.scenario
    floors = {}
    for plan in (model.start, fastest_placement(model)):
        floors[least_latency(scenario, plan, exact_cluster_limit).upper] = plan
    upper = min(floors)
    start = floors[upper]
    lower = 0.0
    if model.association == "fixed":
        relaxed = relaxed_plan(model, start)
        for e in range(scenario.n_edges):
            members = np.flatnonzero(start.association == e)
            if not len(members):
                continue
            units = module_units(scenario, start, members, model.min_trainers) if model.coverage == "cluster" else None
            lower = max(lower, period_floor(scenario, relaxed, e, upper * start.e_agg, units) / start.e_agg)
    return dataclasses.replace(model, start=start), LatencyFloor(upper, lower, False)
