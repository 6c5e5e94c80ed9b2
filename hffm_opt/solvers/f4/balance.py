"""A balanced module assignment for one cluster when module subsets are free (coverage ``"cluster"``).

A device's compute energy within a time t is ``kappa C^3 / t^2``: cubic in its load, so one device training every
module costs far more than the same modules spread over the cluster. F1 (:func:`~hffm_opt.formulations.placement.
build_f4_placement`) prices compute at the incumbent's CPU speeds, linearly, and cannot see that. This greedy
assignment can: the modules in decreasing order of work (FLOPs per sample), each to the members it needs
(``min(min_trainers, able members)``) with the least rise of ``sum kappa C^3``, then every member still without a
module gets the module that adds least to its own. Ties go to the member with the strongest uplink. It is a
candidate the alternation prices like any other (structures and continuous decisions re-solved), never trusted.
"""

from __future__ import annotations

import numpy as np

from ...network.scenario import Scenario
from ...plan import Plan


def balanced_train(scenario: Scenario, plan: Plan, members: np.ndarray, able: np.ndarray,
                   min_trainers: int) -> np.ndarray:
    """(n, K) bool: which modules each of ``members`` trains (module docstring); ``able`` (n, K) the modules each
    may train alone (memory checked again for every set it grows to)."""
    mods, dev = scenario.module_arrays, scenario.devices
    n, n_mod = able.shape
    cycles = plan.module_cycles(scenario, members)  # (n, K)
    kappa = dev.kappa[members]
    room = dev.memory_bytes[members] - scenario.need[members] @ mods["memory_bytes"]
    extra = mods["train_memory_bytes"]
    gain = dev.uplink_gain[members, plan.association[members]]
    train = np.zeros((n, n_mod), bool)
    load = np.zeros(n)

    def rise(k: int) -> np.ndarray:
        """(n,) growth of each member's kappa C^3 on taking module k (inf where it may not)."""
        fits = able[:, k] & ~train[:, k] & (train @ extra + extra[k] <= room)
        return np.where(fits, kappa * ((load + cycles[:, k]) ** 3 - load ** 3), np.inf)

    def give(u: int, k: int) -> None:
        train[u, k] = True
        load[u] += cycles[u, k]

    need = np.minimum(int(min_trainers), able.sum(axis=0))
    work = mods["flops_per_sample"]
    for k in np.argsort(-work, kind="stable"):
        for _ in range(int(need[k])):
            cost = rise(int(k))
            if np.isfinite(cost).any():
                give(int(np.lexsort((-gain, cost))[0]), int(k))
    for u in np.flatnonzero(~train.any(axis=1) & able.any(axis=1)):
        costs = np.array([rise(k)[u] for k in range(n_mod)])
        if np.isfinite(costs).any():
            give(int(u), int(np.argmin(costs)))
    return train
