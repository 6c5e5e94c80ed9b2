"""Solve the continuous part of a plan cluster by cluster: CPU speeds, uplink bandwidth and powers, D2D powers.

Given the discrete choices of a plan and a period budget ``P`` (s), each cluster is solved to its least
period energy independently (the clusters only share the budget, which each must meet; with a finite
``ClusterData.round_cap_s`` each edge round but the period's last also ends within it):

- a D2D cluster is one convex program (:func:`hffm_opt.formulations.tree_program.tree_problem`), solved by cvxpy
  (CLARABEL, then ECOS); an inaccurate or failed solve is a failure, never a result;
- a cluster that uploads straight to its edge alternates two convex blocks until the energy stops falling:
  the uplink bandwidth split for given upload times (the ``fast`` KKT allocator), and each device's split of
  its round between compute and upload for given bandwidth (the CPU block, :func:`fast_kkt.best_split`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

import cvxpy as cp
import numpy as np

from ...formulations.allocation import AllocationData, CpuBlockData
from ...formulations.cluster import ClusterData, cluster_data
from ...formulations.tree_program import tree_problem
from ...network.channel import link_energy, power_for_time, transmit, transmit_time
from ...network.scenario import Scenario
from ...plan import Plan
from ..fast import kkt as fast_kkt

SAFETY = 1e-6  # relative slack kept below the budget so solver tolerances never overrun it
POWER_TOL = 1e-9  # relative: a power above the cap by more than this is a failure, never clipped
ENERGY_RTOL = 1e-6  # relative: a D2D solve whose decisions cost more or less than its objective is not proven
# the D2D cluster's conic program, tried in turn until one proves optimality: CLARABEL sometimes stops with
# "insufficient progress" on badly scaled trees and then succeeds without equilibration or with shorter steps
TREE_SOLVERS = (("CLARABEL", {}), ("CLARABEL", {"equilibrate_enable": False}),
                ("CLARABEL", {"max_step_fraction": 0.9}), ("ECOS", {}))


DECISIONS = ("cpu_hz", "bandwidth_hz", "power_w", "d2d_power_w", "d2d_down_power_w")  # a plan's continuous fields


@dataclass(frozen=True)
class ClusterAllocation:
    """Continuous decisions for one cluster (arrays over its members) and its period energy (J).

    ``feasible`` False means the budget cannot be met with these discrete choices (``message`` says why).
    ``certified``: the answer is proven (a solution at proven optimality, or a proven infeasibility); False when a
    solver failed or the block descent stopped at its iteration limit.
    """

    cpu_hz: np.ndarray
    bandwidth_hz: np.ndarray
    power_w: np.ndarray
    d2d_power_w: np.ndarray
    d2d_down_power_w: np.ndarray
    energy_j: float
    feasible: bool
    message: str = ""
    certified: bool = True


def _infeasible(n: int, message: str, certified: bool = True) -> ClusterAllocation:
    z = np.zeros(n)
    return ClusterAllocation(z, z, z, z, z, float("inf"), False, message, certified)


def _compute_energy(data: ClusterData, tau: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(data.cycles > 0, data.kappa * data.cycles ** 3 / tau ** 2, 0.0)


def solve_tree(data: ClusterData, budget_s: float) -> ClusterAllocation:
    """Least-energy continuous decisions of a D2D cluster within the period budget (cvxpy).

    A solver's ``optimal`` is trusted only after its point, read back as CPU speeds and powers, is priced again
    (:func:`tree_costs`): a point whose period exceeds ``budget_s`` (a solver that reports optimality at a point
    outside its constraints, which happens when the budget leaves next to no slack) is a failure, and the next
    solver is tried; the energy returned is the one of the decisions as written into a plan (``certified`` only
    where it agrees with the program's optimum within :data:`ENERGY_RTOL`)."""
    n = len(data.members)
    prob = tree_problem(data, budget_s * (1 - SAFETY), data.round_cap_s * (1 - SAFETY))
    failure = "no cvxpy solver installed"
    for solver, options in TREE_SOLVERS:
        if solver not in cp.installed_solvers():
            continue
        try:
            with warnings.catch_warnings():  # an inaccurate solve is rejected below; cvxpy's warning is noise
                warnings.simplefilter("ignore")
                prob.problem.solve(solver=solver, ignore_dpp=True, **options)  # no parameters: skip DPP's compile
        except (cp.error.SolverError, ValueError):
            failure = f"{solver} failed"
            continue
        if prob.problem.status == "infeasible":
            cap = f" (each edge round but the last within {data.round_cap_s:.6g} s)" if data.e_agg > 1 and np.isfinite(
                data.round_cap_s) else ""
            return _infeasible(n, f"cluster of edge {data.edge}: the D2D tree cannot finish within {budget_s:.6g} s"
                               + cap)
        if prob.problem.status != "optimal":
            failure = f"cvxpy status {prob.problem.status!r} (treated as failure)"
            continue
        alloc = _tree_allocation(data, prob)
        period, energy = tree_costs(data, alloc)
        regular = sum(tree_phases(data, alloc)) if data.e_agg > 1 else 0.0
        if period <= budget_s and regular <= data.round_cap_s:  # proven optimal only where the decisions cost
            # what the program says
            return replace(alloc, energy_j=energy, certified=abs(energy - alloc.energy_j) <= ENERGY_RTOL * energy)
        failure = (f"{solver} reported optimal at a point whose period is {period:.9g} s (edge round {regular:.9g} "
                   f"s), above the budget {budget_s:.9g} s (round cap {data.round_cap_s:.9g} s; treated as failure)")
    return _infeasible(n, f"cluster of edge {data.edge}: {failure}", certified=False)


def tree_times(data: ClusterData, alloc: ClusterAllocation) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n,) compute time, hop up to the parent and receive from the parent (s; 0 at the root) of each member of a
    D2D cluster under ``alloc``."""
    child = data.parent >= 0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        compute = np.where(data.cycles > 0, data.cycles / alloc.cpu_hz, 0.0)
        hop = np.where(child, transmit_time(data.up_bits, data.d2d_band_hz, alloc.d2d_power_w, data.up_gain,
                                            data.noise), 0.0)
        down = np.where(child, transmit_time(data.down_bits, data.d2d_band_hz, alloc.d2d_down_power_w,
                                             data.down_gain, data.noise), 0.0)
    return compute, hop, down


def tree_phases(data: ClusterData, alloc: ClusterAllocation, path: np.ndarray | None = None) -> tuple[float, float]:
    """(up phase, down phase) of a D2D cluster's edge rounds under ``alloc`` (s): every member's compute and climb
    to the root, the broadcast back down the tree (0 with one edge round per period); an edge round but the
    period's last takes their sum."""
    compute, hop_up, down = tree_times(data, alloc)
    path = data.path_matrix() if path is None else path
    child = data.parent >= 0
    phase_up = float((compute + path @ hop_up).max(initial=0.0))
    phase_down = float((path[:, child] @ down[child]).max(initial=0.0)) if data.e_agg > 1 else 0.0
    return phase_up, phase_down


def tree_costs(data: ClusterData, alloc: ClusterAllocation) -> tuple[float, float]:
    """(period s, period energy J) of a D2D cluster under ``alloc``, priced from its CPU speeds and powers as the
    evaluator prices them (consistent accounting): ``e_agg`` rounds of compute and relay-tree climb, ``e_agg - 1``
    broadcasts down the tree, the aggregator's upload, the fixed transfers and, in the last round, the broadcast of
    the aggregator-tier modules (alongside the edge downlink)."""
    g, child = data.e_agg, data.parent >= 0
    compute, hop_up, down = tree_times(data, alloc)
    t_down = down[child]
    e_up, e_down = alloc.d2d_power_w[child] * hop_up[child], alloc.d2d_down_power_w[child] * t_down
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        t_agg, e_agg_up = transmit(data.agg_bits, data.band_hz, alloc.power_w[data.root], data.agg_gain, data.noise)
        last = np.zeros(int(child.sum())) if data.last_bits is None else data.last_bits[child]
        t_last, e_last = transmit(last, data.d2d_band_hz, alloc.d2d_down_power_w[child], data.down_gain[child],
                                  data.noise)
    path = data.path_matrix()
    phase_up, phase_down = tree_phases(data, alloc, path)
    phase_last = float((path[:, child] @ t_last).max(initial=0.0))
    period = (g * phase_up + (g - 1) * phase_down + float(t_agg) + data.fixed_s
              + max(phase_last - data.downlink_s, 0.0))
    energy = (g * float((data.kappa * data.cycles * alloc.cpu_hz ** 2).sum() + e_up.sum())
              + (g - 1) * float(e_down.sum()) + float(e_last.sum()) + float(e_agg_up) + data.fixed_j)
    return (period, energy) if np.isfinite(period) and np.isfinite(energy) else (float("inf"), float("inf"))


def _tree_allocation(data: ClusterData, prob) -> ClusterAllocation:
    """The decisions of a D2D cluster read back from its solved program (powers capped at the device maximum)."""
    n = len(data.members)
    child = data.parent >= 0
    tau = np.maximum(np.asarray(prob.compute_s.value).reshape(n), np.where(data.cycles > 0, data.cycles / data.fmax, 0))
    cpu = np.where(data.cycles > 0, np.minimum(data.cycles / np.maximum(tau, 1e-300), data.fmax), data.fmax)
    up_p = np.zeros(n)
    down_p = np.zeros(n)
    t_up = np.asarray(prob.up_s.value).reshape(-1)
    up_p[child] = np.minimum(power_for_time(data.up_bits[child], t_up, data.d2d_band_hz, data.up_gain[child],
                                            data.noise),
                             data.pmax[child])
    if prob.down_s is not None:
        t_down = np.asarray(prob.down_s.value).reshape(-1)
        down_p[child] = np.minimum(power_for_time(data.down_bits[child], t_down, data.d2d_band_hz,
                                                  data.down_gain[child], data.noise), data.down_pmax[child])
    else:  # one edge round per period, no aggregator-tier module: the tree never broadcasts (any power will do)
        down_p[child] = data.down_pmax[child]
    bw = np.zeros(n)
    pw = np.zeros(n)
    bw[data.root] = data.band_hz
    if data.agg_bits > 0:
        pw[data.root] = min(float(power_for_time(data.agg_bits, float(prob.agg_s.value[0]), data.band_hz,
                                                 data.agg_gain, data.noise)), data.pmax[data.root])
    else:
        pw[data.root] = data.pmax[data.root]
    return ClusterAllocation(cpu, bw, pw, up_p, down_p, float(prob.problem.value) + data.fixed_j, True)


def solve_direct(data: ClusterData, budget_s: float, max_iter: int = 50, rtol: float = 1e-9) -> ClusterAllocation:
    """Least-energy continuous decisions of a cluster that uploads straight to its edge (block descent)."""
    n, g = len(data.members), data.e_agg
    round_s = (budget_s * (1 - SAFETY) - data.fixed_s) / g
    if g > 1:  # an edge round but the last is the upload phase and the edge downlink
        round_s = min(round_s, data.round_cap_s * (1 - SAFETY) - data.downlink_s)
    tau_min = np.where(data.cycles > 0, data.cycles / data.fmax, 0.0)
    slack = round_s - tau_min
    if round_s <= 0 or (slack <= 0).any():
        return _infeasible(n, f"cluster of edge {data.edge}: compute alone exceeds the round budget {round_s:.6g} s")
    tau = tau_min.copy()
    sends = data.up_bits > 0
    previous, energy = np.inf, np.inf
    b = np.zeros(n)
    converged = False
    for _ in range(max_iter):
        try:
            alloc = fast_kkt.min_energy_allocation(data.up_bits[sends], round_s - tau[sends], data.up_gain[sends],
                                                   data.noise, data.band_hz, data.pmax[sends])
        except fast_kkt.AllocationInfeasible as exc:
            return _infeasible(n, f"cluster of edge {data.edge}: {exc}")
        except fast_kkt.AllocationNotConverged as exc:
            return _infeasible(n, f"cluster of edge {data.edge}: {exc}", certified=False)
        b = np.zeros(n)
        b[sends] = alloc.bandwidth_hz
        tau = _best_split(data, b, round_s)
        energy = g * float(_compute_energy(data, tau).sum()
                           + link_energy(data.up_bits, round_s - tau, np.maximum(b, 1e-300), data.up_gain,
                                         data.noise).sum())
        if previous - energy <= rtol * abs(energy):
            converged = True
            break
        previous = energy
    need = power_for_time(data.up_bits, round_s - tau, np.maximum(b, 1e-300), data.up_gain, data.noise)
    over = sends & ~(need <= data.pmax * (1 + POWER_TOL))
    if over.any():  # the split would need more than full power: never clip (that would break the latency)
        u = int(np.flatnonzero(over)[0])
        return _infeasible(n, f"cluster of edge {data.edge}: device {data.members[u]} would need {need[u]:.6g} W "
                           f"(max {data.pmax[u]:.6g} W) after the compute/upload split", certified=False)
    power = np.where(sends, np.minimum(need, data.pmax), 0.0)  # within POWER_TOL of the cap: rounding only
    cpu = np.where(data.cycles > 0, np.minimum(data.cycles / np.maximum(tau, 1e-300), data.fmax), data.fmax)
    zeros = np.zeros(n)
    return ClusterAllocation(cpu, b, power, zeros, zeros, energy + data.fixed_j, True,
                             "" if converged else f"block descent stopped after {max_iter} iterations", converged)


def _best_split(data: ClusterData, b: np.ndarray, round_s: float) -> np.ndarray:
    """Per device, the compute time (s) of the CPU block for the band split ``b`` (:func:`fast_kkt.best_split`)."""
    link = AllocationData.create(data.up_bits, data.up_gain, data.pmax, data.noise, data.band_hz)
    block = CpuBlockData.create(link, b, data.cycles, data.kappa, data.fmax, round_s)
    return fast_kkt.best_split(block)[0]


def solve_cluster(data: ClusterData, budget_s: float) -> ClusterAllocation:
    """Dispatch on the cluster's kind."""
    if len(data.members) == 0:
        return ClusterAllocation(*(np.zeros(0),) * 5, 0.0, True)
    return solve_tree(data, budget_s) if data.uses_d2d else solve_direct(data, budget_s)


def kept_allocation(plan: Plan, members: np.ndarray, energy_j: float) -> ClusterAllocation:
    """The continuous decisions ``plan`` already has for a cluster's ``members``, at their period energy (J, as
    the evaluator prices them): the incumbent a search falls back to."""
    return ClusterAllocation(*(getattr(plan, f)[members].copy() for f in DECISIONS), float(energy_j), True)


def apply_allocation(plan: Plan, allocations: dict[int, tuple[np.ndarray, ClusterAllocation]]) -> Plan:
    """A copy of ``plan`` with the clusters' continuous decisions written in (no deadline: nobody straggles)."""
    fields = {f: getattr(plan, f).copy() for f in DECISIONS}
    for members, alloc in allocations.values():
        for f in fields:
            fields[f][members] = getattr(alloc, f)
    return plan.replace(deadline_s=None, **fields)


def optimise_continuous(scenario: Scenario, plan: Plan, budget_s: float) -> tuple[Plan, float, list[str]]:
    """Least-energy continuous decisions for every cluster of ``plan`` within the period budget.

    Returns the new plan, its period energy (J; inf if some cluster cannot meet the budget) and the messages of
    the clusters that could not.
    """
    allocations, total, problems = {}, 0.0, []
    for e in range(scenario.n_edges):
        data = cluster_data(scenario, plan, e)
        alloc = solve_cluster(data, budget_s)
        if not alloc.feasible:
            problems.append(alloc.message)
            total = float("inf")
            continue
        allocations[e] = (data.members, alloc)
        total += alloc.energy_j
    return apply_allocation(plan, allocations), total, problems
