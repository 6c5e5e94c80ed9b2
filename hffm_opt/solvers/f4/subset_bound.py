"""A proven lower bound on full F4's energy per edge round when module subsets are free (coverage ``"cluster"``).

With coverage ``"cluster"`` a device trains any non-empty set of the modules it needs that fits its memory, and each
module needed in a cluster is trained by at least ``min(min_trainers, members able to hold it)`` members. Every
device energy the relaxations of :mod:`.bounds` price (compute, its own hop or upload, receiving its own modules) is
convex in the device's load and zero at zero load, so a device's energy for a module set is at least the sum of its
energies for each module alone. The bound prices each (device, module) pair alone and covers the modules
(:func:`.bounds.cover_cost`: each member at least its cheapest module, each module its cheapest trainers):

- association fixed: per cluster, :func:`.bounds.cluster_lower_bound` with one unit per module, the modules that
  must be trained there (those with an able member) giving the fixed transfers, every module that may stay in its
  cluster priced at the aggregator tier (no upload, no edge downlink: it bounds every tier choice);
- association free: :func:`.association_bound.association_bound` with each device's load lowered to its least
  module (fewest bits and fewest cycles of any module it may train; no coverage across devices), and the fixed
  transfers of an edge at least those of the modules its cheapest candidate would need trained there.

The fixed part returned is, as with every module trained: with the association fixed the plan's own (its tiers'
backhaul and edge downlinks; every needed module is trained in its cluster either way), with it free the least any
association pays. Energies in J per edge round, times in s.
"""

from __future__ import annotations

import numpy as np

from ...formulations.joint import JointModel, edge_allowed
from ...network.scenario import Scenario
from ...plan import AGG, Plan
from .association_bound import association_bound
from .bounds import Units, cluster_lower_bound, fixed_energy


def able_modules(scenario: Scenario) -> np.ndarray:
    """(U, K) bool: the trainable modules each device needs and can hold alone (its memory less what it holds)."""
    mods = scenario.module_arrays
    free = scenario.devices.memory_bytes - scenario.need @ mods["memory_bytes"]
    return scenario.need & mods["trainable"][None, :] & (mods["train_memory_bytes"][None, :] <= free[:, None])


def compute_floor(kappa: np.ndarray, per_work: np.ndarray, work: np.ndarray, able: np.ndarray, need: np.ndarray
                  ) -> float:
    """A lower bound (J s^2) on ``sum_i kappa_i C_i^3`` over every assignment of modules to members, module j
    (``work`` (J,), e.g. FLOPs) costing ``per_work[i] * work[j]`` cycles on member i: member i's work lies between
    its least and its total able work, and the members' work adds up to at least ``sum_j need_j work_j``.
    Lagrangian dual of that convex relaxation at the price that balances it (bisection; any price gives a valid
    bound)."""
    lo = np.where(able, work[None, :], np.inf).min(axis=1, initial=np.inf)
    lo = np.where(np.isfinite(lo), lo, 0.0)
    hi = np.where(able, work[None, :], 0.0).sum(axis=1)
    total = float(need @ work)
    c = kappa * per_work ** 3  # member i's kappa C^3 = c_i l^3 for work l
    if total <= 0 or total > hi.sum() * (1 + 1e-12):
        return 0.0

    def inner(price: float) -> tuple[np.ndarray, float]:  # each member's best work at ``price`` and the dual value
        with np.errstate(divide="ignore"):
            load = np.clip(np.where(c > 0, np.sqrt(price / (3 * np.where(c > 0, c, 1.0))), hi), lo, hi)
        return load, float((c * load ** 3).sum() + price * (total - load.sum()))

    lo_p, hi_p = 0.0, 1.0
    while inner(hi_p)[0].sum() < total and hi_p < 1e300:
        hi_p *= 4.0
    best = 0.0
    for _ in range(200):
        mid = 0.5 * (lo_p + hi_p)
        load, value = inner(mid)
        best = max(best, value)
        lo_p, hi_p = (mid, hi_p) if load.sum() < total else (lo_p, mid)
    return best


def module_units(scenario: Scenario, plan: Plan, members: np.ndarray, min_trainers: int) -> Units:
    """Cluster ``members``' units, one per module: its cycles on each member and its update bits, who may train it,
    how many members must (``min(min_trainers, able members)``), the floor of their compute energy (the module
    work, FLOPs per sample, spread over the members: :func:`compute_floor`) and the least time that work takes
    (every able member at full speed, the work shared perfectly)."""
    able = able_modules(scenario)[members]
    bits = np.broadcast_to(scenario.module_arrays["update_bits"], able.shape)
    need = np.minimum(int(min_trainers), able.sum(axis=0))
    cycles = plan.module_cycles(scenario, members)
    work = scenario.module_arrays["flops_per_sample"]
    per_work = plan.cycles_per_flop(scenario, members)
    speed = np.where(able.any(axis=1) & (per_work > 0), scenario.devices.cpu_hz[members] / per_work, 0.0)
    required = float(need @ work)  # work the members must do in a round, shared perfectly at full speed:
    compute_s = required / speed.sum() if required > 0 and speed.sum() > 0 else 0.0
    return Units(cycles=cycles, bits=bits, able=able, need=need, compute_s=compute_s,
                 compute_floor=compute_floor(scenario.devices.kappa[members], per_work, work, able, need))


def relaxed_plan(model: JointModel, plan: Plan) -> Plan:
    """``plan`` without D2D, every module that may stay in its cluster at the aggregator tier (no upload, no edge
    downlink: below every tier choice) and, with coverage ``"cluster"``, every able module trained (the modules a
    cluster must train): the plan whose fixed transfers the relaxations of a free placement price."""
    scenario = model.scenario
    train = able_modules(scenario) if model.coverage == "cluster" else plan.train
    return plan.replace(train=train, tier=np.where(edge_allowed(scenario, model.edge_tiers)[None, :], AGG, plan.tier),
                        aggregator=np.full(scenario.n_edges, -1), parent=np.full(scenario.n_devices, -1))


def subset_bound(model: JointModel, plan: Plan, budget_s: float, candidates: np.ndarray | None
                 ) -> tuple[float, float]:
    """(proven lower bound on the energy per edge round (J), least fixed energy per edge round (J)) over every
    module subset within the coverage rule, structure, tier choice and continuous decisions, with ``plan``'s
    association (``candidates`` None) or any within ``candidates`` (U, E) bool, e_agg ``plan.e_agg`` and period
    budget ``budget_s`` (s) (module docstring)."""
    scenario, g = model.scenario, plan.e_agg
    relaxed = relaxed_plan(model, plan)
    if candidates is None:
        total = 0.0
        for e in range(scenario.n_edges):
            members = np.flatnonzero(plan.association == e)
            if len(members):
                total += cluster_lower_bound(scenario, relaxed, e, budget_s,
                                             units=module_units(scenario, plan, members, model.min_trainers))
        return total / g, fixed_energy(scenario, plan)
    able = able_modules(scenario)
    cycles = np.where(able, plan.module_cycles(scenario), np.inf).min(axis=1)
    bits = np.where(able, scenario.module_arrays["update_bits"][None, :], np.inf).min(axis=1)
    least = (np.where(np.isfinite(bits), bits, 0.0), np.where(np.isfinite(cycles), cycles, 0.0))
    return association_bound(scenario, relaxed, budget_s, candidates, model.edge_tiers, loads=least)
